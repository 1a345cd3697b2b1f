//! `ember queue list|read|delete`: emberd's local destination queues from
//! the command line (through the `/ember/queues` routes).

use serde_json::Value;

use super::client::{enc, ClientError, Conn};

#[derive(Debug, clap::Subcommand)]
pub enum QueueCmd {
    /// Queues and how many messages each holds.
    List,
    /// Print a queue's messages (destination records), oldest first.
    Read {
        name: String,
        /// At most this many messages (all when omitted).
        #[arg(long)]
        max: Option<usize>,
    },
    /// Delete one message (--message ID) or every message of a queue.
    Delete {
        name: String,
        #[arg(long)]
        message: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueueCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
}

async fn call(ep: &str, method: &str, path: &str) -> Result<Value, QueueCliError> {
    let mut c = Conn::connect(ep).await?;
    let r = c.send(method, path, &[], Vec::new()).await?;
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if r.status >= 400 {
        return Err(QueueCliError::Api {
            kind: r.header("x-amzn-errortype").unwrap_or("Error").into(),
            message: v["message"].as_str().unwrap_or("(no message)").into(),
        });
    }
    Ok(v)
}

fn print(json: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

pub async fn run(ep: &str, json: bool, cmd: QueueCmd) -> Result<(), QueueCliError> {
    match cmd {
        QueueCmd::List => {
            let v = call(ep, "GET", "/ember/queues").await?;
            print(json, &v, |v| {
                println!("{:<40} {:>9}  ARN", "QUEUE", "MESSAGES");
                for q in v["Queues"].as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:>9}  {}",
                        q["Name"].as_str().unwrap_or(""),
                        q["Messages"].as_u64().unwrap_or(0),
                        q["Arn"].as_str().unwrap_or("")
                    );
                }
            });
        }
        QueueCmd::Read { name, max } => {
            let mut all = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let want = max.map(|m| m - all.len()).unwrap_or(1000).clamp(1, 1000);
                let mut path = format!("/ember/queues/{}?MaxItems={want}", enc(&name));
                if let Some(m) = &marker {
                    path.push_str(&format!("&Marker={}", enc(m)));
                }
                let v = call(ep, "GET", &path).await?;
                all.extend(v["Messages"].as_array().cloned().unwrap_or_default());
                marker = v["NextMarker"].as_str().map(str::to_string);
                if marker.is_none() || max.is_some_and(|m| all.len() >= m) {
                    break;
                }
            }
            let v = serde_json::json!({ "Messages": all });
            print(json, &v, |v| {
                for m in v["Messages"].as_array().into_iter().flatten() {
                    let ctx = &m["Body"]["requestContext"];
                    println!(
                        "{}  {}  {}  request {}  invocations {}",
                        m["MessageId"].as_str().unwrap_or(""),
                        m["Body"]["timestamp"].as_str().unwrap_or(""),
                        ctx["condition"].as_str().unwrap_or(""),
                        ctx["requestId"].as_str().unwrap_or(""),
                        ctx["approximateInvokeCount"]
                    );
                    println!("  {}", m["Body"]);
                }
            });
        }
        QueueCmd::Delete { name, message } => {
            let mut path = format!("/ember/queues/{}", enc(&name));
            if let Some(id) = &message {
                path.push_str(&format!("?MessageId={}", enc(id)));
            }
            let v = call(ep, "DELETE", &path).await?;
            print(json, &v, |v| {
                println!("deleted {} message(s) from {name}", v["Deleted"])
            });
        }
    }
    Ok(())
}
