//! Secret files (passwords, keys): readable by their owner only.

use std::path::Path;

use crate::i18n::Message;

/// Reads a secret file's bytes, refusing one readable by group or others. The refusal is a
/// message, for the reader's language (its English is `.write(Lang::En)`).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, Message> {
    let unreadable = |e: std::io::Error| {
        Message::new("cfg-secret-unreadable")
            .text("path", path.display().to_string())
            .text("detail", e.to_string())
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            return Err(Message::new("cfg-secret-exposed")
                .text("path", path.display().to_string())
                .text("mode", format!("{:o}", mode & 0o777)));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read(path).map_err(unreadable)
}
