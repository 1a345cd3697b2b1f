//! Function URLs: where they are served (`emberd --url-listen`), the index
//! from a URL's id to its function, and what a call through one becomes
//! ([`event`]: Lambda's payload format 2.0 in, the function's answer out;
//! [`cors`]). The listener's HTTP handler is `api::url_calls`.

pub mod cors;
pub mod event;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{FunctionRecord, Store, StoreError, UrlConfig};
use crate::util::REGION;

/// A miss in the index rescans the store at most this often, so unknown
/// hosts (typos, scanners) cannot make every request a full scan.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Page size of a rescan.
const SCAN_PAGE: usize = 500;

/// The function URLs of this host.
pub struct Urls {
    /// The URL listener's address (`None`: emberd serves no function URLs).
    listen: Option<SocketAddr>,
    index: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    /// URL id → (stored function name, qualifier).
    by_id: HashMap<String, (String, Option<String>)>,
    scanned: Option<Instant>,
}

impl Urls {
    /// `listen`: where `--url-listen` bound (`None`: not served).
    pub fn new(listen: Option<SocketAddr>) -> Self {
        Urls {
            listen,
            index: Mutex::new(Index::default()),
        }
    }

    /// Whether function URLs are served here.
    pub fn served(&self) -> bool {
        self.listen.is_some()
    }

    /// The public URL of the URL id `id` (Lambda's
    /// `https://<id>.lambda-url.<region>.on.aws/`, here on the listener's
    /// port under `localhost`, which resolves to loopback by name).
    pub fn url(&self, id: &str) -> String {
        let port = self.listen.map_or(0, |a| a.port());
        format!("http://{id}.lambda-url.{REGION}.localhost:{port}/")
    }

    /// A new URL id: 32 lowercase hex digits (random).
    pub fn new_id() -> String {
        crate::util::uuid4().replace('-', "")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a URL just created.
    pub fn remember(&self, id: &str, function: &str, qualifier: Option<&str>) {
        self.lock().by_id.insert(
            id.to_string(),
            (function.to_string(), qualifier.map(str::to_string)),
        );
    }

    /// The function and configuration of URL `id`, read from the store
    /// (the index only says where to look; a stale entry is dropped).
    pub fn find(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Option<(FunctionRecord, UrlConfig)>, StoreError> {
        if let Some(found) = self.look(store, id)? {
            return Ok(Some(found));
        }
        let due = self
            .lock()
            .scanned
            .is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if !due {
            return Ok(None);
        }
        self.rescan(store)?;
        self.look(store, id)
    }

    fn look(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Option<(FunctionRecord, UrlConfig)>, StoreError> {
        let Some((name, _)) = self.lock().by_id.get(id).cloned() else {
            return Ok(None);
        };
        let f = match store.get_function(&name) {
            Ok(f) => f,
            Err(StoreError::NotFound(_)) => {
                self.lock().by_id.remove(id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match f.urls.iter().find(|u| u.url_id == id).cloned() {
            Some(u) => Ok(Some((f, u))),
            None => {
                self.lock().by_id.remove(id);
                Ok(None)
            }
        }
    }

    fn rescan(&self, store: &Store) -> Result<(), StoreError> {
        let mut by_id = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let (page, next) = store.list_functions(marker.as_deref(), SCAN_PAGE)?;
            for f in page {
                for u in &f.urls {
                    by_id.insert(u.url_id.clone(), (f.name.clone(), u.qualifier.clone()));
                }
            }
            match next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        let mut index = self.lock();
        index.by_id = by_id;
        index.scanned = Some(Instant::now());
        Ok(())
    }
}

/// The URL id a request names: the first label of a
/// `<id>.lambda-url.<region>.<anything>` host, or the path form
/// `/lambda-url/<id>/…` for clients that cannot set `Host`; with the path
/// the function sees (the path form's prefix removed).
pub fn route<'a>(host: Option<&'a str>, path: &'a str) -> Option<(&'a str, &'a str)> {
    let from_host = host.and_then(|h| {
        let (id, rest) = h.split_once('.')?;
        rest.starts_with("lambda-url.").then_some(id)
    });
    let (id, path) = match from_host {
        Some(id) => (id, path),
        None => {
            let rest = path.strip_prefix("/lambda-url/")?;
            match rest.split_once('/') {
                Some((id, _)) => (id, &rest[id.len()..]),
                None => (rest, "/"),
            }
        }
    };
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid.then_some((id, path))
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn the_id_comes_from_the_host_or_the_path_form() {
        let id = "0123456789abcdef0123456789abcdef";
        let host = format!("{id}.lambda-url.us-east-1.localhost:9000");
        assert_eq!(route(Some(&host), "/a/b"), Some((id, "/a/b")));
        let path = format!("/lambda-url/{id}/a/b");
        assert_eq!(route(Some("127.0.0.1:9000"), &path), Some((id, "/a/b")));
        let bare = format!("/lambda-url/{id}");
        assert_eq!(route(None, &bare), Some((id, "/")));
        assert_eq!(route(Some("example.com"), "/a"), None);
        assert_eq!(route(None, "/lambda-url/UPPER/x"), None);
        assert_eq!(route(None, "/lambda-url//x"), None);
    }
}
