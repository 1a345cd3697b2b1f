//! Percent-decoding (RFC 3986 §2.1) in two modes: strict for the API's
//! request targets (a malformed escape or non-UTF-8 result is the client's
//! error), lenient for what function URLs pass to the function (Lambda
//! keeps a malformed escape as written and never refuses the call).

/// Why a strict decode failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PctError {
    #[error("a `%` not followed by two hex digits")]
    Escape,
    #[error("the decoded bytes are not UTF-8")]
    Utf8,
}

/// Decodes `s`, refusing malformed escapes and non-UTF-8 results.
pub fn strict(s: &str) -> Result<String, PctError> {
    let bytes = decode(s, false)?;
    String::from_utf8(bytes).map_err(|_| PctError::Utf8)
}

/// Decodes `s`, keeping a malformed escape as written and replacing
/// non-UTF-8 sequences with U+FFFD.
pub fn lenient(s: &str) -> String {
    // Lenient decoding has no failure to report.
    let bytes = decode(s, true).unwrap_or_else(|_| s.as_bytes().to_vec());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The one decoder: `%XX` (two hex digits) becomes byte XX; anything else
/// is copied. A `%` without two hex digits is copied when `lenient`, an
/// error otherwise.
fn decode(s: &str, lenient: bool) -> Result<Vec<u8>, PctError> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let pair = b
                .get(i + 1..i + 3)
                .and_then(|p| Some((hex(p[0])?, hex(p[1])?)));
            match pair {
                Some((h, l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                None if !lenient => return Err(PctError::Escape),
                None => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{lenient, strict, PctError};

    #[test]
    fn both_modes_decode_escapes_and_differ_on_malformed_input() {
        assert_eq!(strict("a%20b%2Fc%c3%A9"), Ok("a b/cé".to_string()));
        assert_eq!(lenient("a%20b%2Fc%c3%A9"), "a b/cé");
        // `+` is data here; query parsers turn it into a space first.
        assert_eq!(strict("a+b"), Ok("a+b".to_string()));
        for bad in ["%", "%4", "x%zz", "%+1", "%4g"] {
            assert_eq!(strict(bad), Err(PctError::Escape), "{bad}");
            assert_eq!(lenient(bad), bad, "{bad}");
        }
        assert_eq!(strict("%ff"), Err(PctError::Utf8));
        assert_eq!(lenient("%ff%41"), "\u{fffd}A");
    }
}
