//! The byte format of the audit trail: one JSON object per line, each
//! carrying the SHA-256 of its predecessor (`prev`) and of itself (`hash`,
//! always the last field), digests additionally an HMAC-SHA256 (`mac`, the
//! field before `hash`), and the signed head kept in its own file. Hashes
//! and MACs are computed over the exact bytes written, so no JSON
//! canonicalisation is involved: see DESIGN.md "Audit trail".

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use crate::digest::{hex, is_hex64, sha256_hex, unhex};

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;
/// `,"mac":"` + 64 hex digits + `"}`.
const MAC_SUFFIX_LEN: usize = 8 + 64 + 2;
/// Domain separation for the head's MAC (digests MAC their own JSON body,
/// which always holds `"type":"digest"`, so the two can never be confused).
const HEAD_CONTEXT: &str = "ember-audit-head-v1";

type HmacSha256 = Hmac<Sha256>;

pub fn hmac_hex(key: &[u8; 32], data: &[u8]) -> String {
    // new_from_slice accepts keys of any length for HMAC; 32 bytes never fails.
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            hex(&m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Constant-time check of a hex MAC over `data`.
pub fn hmac_ok(key: &[u8; 32], data: &[u8], mac_hex: &str) -> bool {
    let Some(tag) = unhex(mac_hex) else {
        return false;
    };
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.verify_slice(&tag).is_ok()
        }
        Err(_) => false,
    }
}

/// Serialises `body` (a JSON object whose last field is `prev`) into the
/// line to append (without the newline) and its hash. With a key, the
/// record is a digest and gets a `mac` over its body first.
pub fn seal<T: Serialize>(
    body: &T,
    mac_key: Option<&[u8; 32]>,
) -> Result<(String, String), serde_json::Error> {
    Ok(seal_text(serde_json::to_string(body)?, mac_key))
}

/// [`seal`] for an already serialised body (`{…,"prev":"…"}`).
pub fn seal_text(mut s: String, mac_key: Option<&[u8; 32]>) -> (String, String) {
    if let Some(key) = mac_key {
        let mac = hmac_hex(key, s.as_bytes());
        s.pop();
        s.push_str(&format!(",\"mac\":\"{mac}\"}}"));
    }
    let hash = sha256_hex(s.as_bytes());
    s.pop();
    s.push_str(&format!(",\"hash\":\"{hash}\"}}"));
    (s, hash)
}

/// A line read back: its fields and what its bytes hash to.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub value: Value,
    pub seq: u64,
    pub prev: String,
    pub kind: String,
    /// The `hash` field as stored.
    pub stored_hash: String,
    /// SHA-256 of the bytes the stored hash must cover.
    pub computed_hash: String,
    /// For a digest: its body (the bytes the `mac` covers) and the `mac`.
    pub mac: Option<(String, String)>,
}

impl Parsed {
    pub fn hash_ok(&self) -> bool {
        self.stored_hash == self.computed_hash
    }

    pub fn mac_ok(&self, key: &[u8; 32]) -> bool {
        match &self.mac {
            Some((body, mac)) => hmac_ok(key, body.as_bytes(), mac),
            None => false,
        }
    }

    pub fn is_digest(&self) -> bool {
        self.kind == "digest"
    }

    pub fn time_ms(&self) -> u64 {
        self.value["time_ms"].as_u64().unwrap_or(0)
    }
}

/// Parses one line (without its newline). `Err` says why it is malformed.
pub fn parse(line: &str) -> Result<Parsed, &'static str> {
    let value: Value = serde_json::from_str(line).map_err(|_| "not a JSON object")?;
    let cut = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .filter(|&c| line.is_char_boundary(c))
        .ok_or("too short")?;
    let (head, suffix) = line.split_at(cut);
    let stored_hash = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| is_hex64(h))
        .ok_or("the hash is not the last field")?
        .to_string();
    let hashed = format!("{head}}}");
    let seq = value["seq"].as_u64().ok_or("no seq")?;
    let prev = value["prev"]
        .as_str()
        .filter(|p| is_hex64(p))
        .ok_or("no prev")?
        .to_string();
    let kind = value["type"].as_str().ok_or("no type")?.to_string();
    let mac = if kind == "digest" {
        let cut = head
            .len()
            .checked_sub(MAC_SUFFIX_LEN - 1)
            .filter(|&c| head.is_char_boundary(c))
            .ok_or("digest too short")?;
        let (body, suffix) = head.split_at(cut);
        let mac = suffix
            .strip_prefix(",\"mac\":\"")
            .and_then(|s| s.strip_suffix('"'))
            .filter(|m| is_hex64(m))
            .ok_or("a digest without a mac before its hash")?;
        Some((format!("{body}}}"), mac.to_string()))
    } else {
        None
    };
    Ok(Parsed {
        computed_hash: sha256_hex(hashed.as_bytes()),
        value,
        seq,
        prev,
        kind,
        stored_hash,
        mac,
    })
}

/// Size of one head slot; the head file holds two (written alternately, so
/// a torn write can only ever damage the older one).
pub const HEAD_SLOT: usize = 256;

/// The signed head: the last record's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    /// The slot bytes: JSON padded with spaces, newline-terminated.
    pub fn encode(&self, key: &[u8; 32]) -> [u8; HEAD_SLOT] {
        let mac = hmac_hex(key, self.signed_text().as_bytes());
        let s = format!(
            "{{\"seq\":{},\"hash\":\"{}\",\"mac\":\"{mac}\"}}",
            self.seq, self.hash
        );
        let mut slot = [b' '; HEAD_SLOT];
        let n = s.len().min(HEAD_SLOT - 1);
        slot[..n].copy_from_slice(&s.as_bytes()[..n]);
        slot[HEAD_SLOT - 1] = b'\n';
        slot
    }

    fn signed_text(&self) -> String {
        format!("{HEAD_CONTEXT}\n{}\n{}", self.seq, self.hash)
    }

    /// The head in `slot` if its MAC verifies under `key`.
    pub fn decode(slot: &[u8], key: &[u8; 32]) -> Option<Head> {
        let v: Value = serde_json::from_slice(slot).ok()?;
        let head = Head {
            seq: v["seq"].as_u64()?,
            hash: v["hash"].as_str().filter(|h| is_hex64(h))?.to_string(),
        };
        hmac_ok(key, head.signed_text().as_bytes(), v["mac"].as_str()?).then_some(head)
    }

    /// The newest valid head among the slots of a head file.
    pub fn newest(file: &[u8], key: &[u8; 32]) -> Option<Head> {
        file.chunks(HEAD_SLOT)
            .filter_map(|s| Head::decode(s, key))
            .max_by_key(|h| h.seq)
    }
}
