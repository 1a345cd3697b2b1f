//! CORS for function URLs, as Lambda applies a URL's `Cors` configuration:
//! it answers preflight requests itself (the function never runs) and adds
//! the allow headers to every response for an allowed origin.

use crate::store::Cors;

fn origin_allowed<'a>(cors: &Cors, origin: &'a str) -> Option<&'a str> {
    cors.allow_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        .then_some(origin)
}

/// Whether a request is a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
pub fn is_preflight(method: &hyper::Method, headers: &hyper::HeaderMap) -> bool {
    method == hyper::Method::OPTIONS
        && headers.contains_key(hyper::header::ORIGIN)
        && headers.contains_key(hyper::header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn origin(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
}

/// The headers of a preflight answer (none when the origin or the method
/// is not allowed: the browser then refuses the call).
pub fn preflight(cors: &Cors, headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    let Some(origin) = origin(headers).and_then(|o| origin_allowed(cors, o)) else {
        return Vec::new();
    };
    let method = headers
        .get(hyper::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let method_ok = cors
        .allow_methods
        .iter()
        .any(|m| m == "*" || m.eq_ignore_ascii_case(method));
    if !method_ok {
        return Vec::new();
    }
    let mut out = allow_origin(cors, origin);
    out.push((
        "access-control-allow-methods".into(),
        cors.allow_methods.join(","),
    ));
    if !cors.allow_headers.is_empty() {
        out.push((
            "access-control-allow-headers".into(),
            cors.allow_headers.join(","),
        ));
    }
    if let Some(age) = cors.max_age {
        out.push(("access-control-max-age".into(), age.to_string()));
    }
    out
}

/// The headers added to an actual response for an allowed origin.
pub fn response(cors: &Cors, headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    let Some(origin) = origin(headers).and_then(|o| origin_allowed(cors, o)) else {
        return Vec::new();
    };
    let mut out = allow_origin(cors, origin);
    if !cors.expose_headers.is_empty() {
        out.push((
            "access-control-expose-headers".into(),
            cors.expose_headers.join(","),
        ));
    }
    out
}

fn allow_origin(cors: &Cors, origin: &str) -> Vec<(String, String)> {
    // With credentials the browser needs the origin itself, never `*`.
    let value = if cors.allow_origins.iter().any(|o| o == "*") && !cors.allow_credentials {
        "*".to_string()
    } else {
        origin.to_string()
    };
    let mut out = vec![
        ("access-control-allow-origin".to_string(), value),
        ("vary".to_string(), "Origin".to_string()),
    ];
    if cors.allow_credentials {
        out.push(("access-control-allow-credentials".into(), "true".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
        let mut m = hyper::HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    fn cors() -> Cors {
        Cors {
            allow_origins: vec!["https://app.example".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-custom".into()],
            expose_headers: vec!["x-out".into()],
            max_age: Some(300),
            allow_credentials: true,
        }
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_gets_the_configured_answer() {
        let req = h(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(is_preflight(&hyper::Method::OPTIONS, &req));
        let out = preflight(&cors(), &req);
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(get("access-control-allow-methods"), Some("GET,POST"));
        assert_eq!(get("access-control-allow-headers"), Some("x-custom"));
        assert_eq!(get("access-control-max-age"), Some("300"));
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
    }

    #[test]
    fn other_origins_and_methods_get_no_cors_headers() {
        let evil = h(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(preflight(&cors(), &evil).is_empty());
        assert!(response(&cors(), &evil).is_empty());
        let delete = h(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "DELETE"),
        ]);
        assert!(preflight(&cors(), &delete).is_empty());
    }

    #[test]
    fn a_wildcard_origin_answers_star_unless_credentials_are_allowed() {
        let mut c = cors();
        c.allow_origins = vec!["*".into()];
        c.allow_credentials = false;
        let req = h(&[("origin", "https://any.example")]);
        assert_eq!(response(&c, &req)[0].1, "*");
        c.allow_credentials = true;
        assert_eq!(response(&c, &req)[0].1, "https://any.example");
    }
}
