//! `GET /metrics`: the Prometheus exposition of [`crate::metrics`].

use super::{App, Reply};
use crate::auth::Caller;

/// `GET /metrics`: the exposition with the host view taken now (reads
/// `/proc`: call on a blocking thread), scoped to the caller's account
/// unless the caller is an operator.
pub fn reply(app: &App, caller: &Caller) -> Reply {
    let scope = (!caller.operator).then(|| caller.account());
    let envs: Vec<_> = app
        .functions
        .pool()
        .list()
        .into_iter()
        .filter(|e| scope.is_none_or(|a| crate::util::split_scoped(&e.key.function).0 == a))
        .collect();
    let mut view = crate::metrics::HostView::collect(&envs);
    if scope.is_none() {
        view.claims = Some(app.functions.pool().memory());
        view.wasm_artefacts = app.functions.caps().aot.as_ref().map(|a| a.memory_use());
    }
    Reply {
        status: 200,
        headers: vec![("content-type", crate::metrics::expo::CONTENT_TYPE.into())],
        body: app.metrics.render_scoped(&view, scope).into(),
        json: false,
    }
}
