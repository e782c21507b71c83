//! How an error is said to a person.

/// An error and its causes, each said once: an error whose message already holds its cause's
/// (`cannot open X: Permission denied`) is not followed by that cause again.
pub(crate) fn causes(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let said = cause.to_string();
        if !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
    }
    out
}
