//! Destinations: emberd's own local queues stand in for SQS. A destination
//! is given as `arn:aws:sqs:<region>:<account>:<queue>` and its records go
//! to `<account>`'s local queue `<queue>` (any region names the same queue:
//! emberd is one machine; the account must be the function's own). Other
//! destination kinds are refused.

use crate::util::{scoped_name, split_scoped, ACCOUNT, REGION};

/// Longest queue name (SQS's limit).
const MAX_QUEUE_NAME: usize = 80;

/// Queue names: `[A-Za-z0-9_-]{1,80}`, which also keeps them out of store
/// key separators.
pub fn valid_queue(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The local queue a destination ARN names (as stored: scoped to the ARN's
/// account, see [`crate::util::scoped_name`]), or why it cannot be used.
pub fn queue_of(arn: &str) -> Result<String, String> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "sqs", _region, account, queue] if partition.starts_with("aws") => {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                Err(format!("The destination account {account:?} must be 12 digits."))
            } else if valid_queue(queue) {
                Ok(scoped_name(account, queue))
            } else {
                Err(format!(
                    "The destination queue name {queue:?} must be 1-80 characters of [A-Za-z0-9_-]."
                ))
            }
        }
        ["arn", _, service, ..] => Err(format!(
            "Destination {arn} is not supported: emberd delivers destination records only to its local queues, named as SQS queue ARNs (arn:aws:sqs:{REGION}:{ACCOUNT}:QUEUE), not to {service}."
        )),
        _ => Err(format!(
            "Destination {arn:?} is not a valid ARN (expected arn:aws:sqs:{REGION}:{ACCOUNT}:QUEUE)."
        )),
    }
}

/// The ARN emberd shows for a stored (scoped) queue name.
pub fn queue_arn(scoped: &str) -> String {
    let (account, queue) = split_scoped(scoped);
    format!("arn:aws:sqs:{REGION}:{account}:{queue}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_arns_map_to_local_queues() {
        assert_eq!(queue_of(&queue_arn("dlq-1")).as_deref(), Ok("dlq-1"));
        assert_eq!(
            queue_of("arn:aws:sqs:eu-west-1:123456789012:q_2").as_deref(),
            Ok("123456789012:q_2")
        );
        assert_eq!(
            queue_arn("123456789012:q_2"),
            "arn:aws:sqs:us-east-1:123456789012:q_2"
        );
        assert!(queue_of("arn:aws:sqs:us-east-1:12:q").is_err());
        assert!(queue_of("arn:aws:sns:us-east-1:000000000000:topic")
            .unwrap_err()
            .contains("not supported"));
        assert!(queue_of("arn:aws:sqs:us-east-1:000000000000:../x").is_err());
        assert!(queue_of("arn:aws:sqs:us-east-1:000000000000:").is_err());
        assert!(queue_of("my-queue").is_err());
        assert!(!valid_queue(&"q".repeat(81)));
    }
}
