//! What clients and callers name in the runtime's terms, checked: a room,
//! a close code and its reason.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;

/// Checks a room name: 1-128 bytes, no control characters, no commas
/// (`?rooms=a,b` splits on them).
pub fn check_room(room: &str) -> Result<()> {
    if room.is_empty() || room.len() > 128 || room.chars().any(|c| c.is_control() || c == ',') {
        let shown = crate::error::shown(room);
        return Err(Error::bad_request(
            ErrorCode::InvalidRoom,
            format!(
                "invalid room '{shown}': use 1-128 characters, no commas or control characters"
            ),
        ));
    }
    Ok(())
}

/// Close codes a caller may send (RFC 6455 §7.4): 1000, the server's
/// 1012 (restarting) and 1013 (try again later), or 3000-4999.
pub fn check_close(code: u16, reason: &str) -> Result<()> {
    if !(matches!(code, 1000 | 1012 | 1013) || (3000..=4999).contains(&code)) {
        return Err(Error::bad_request(
            ErrorCode::InvalidCloseCode,
            format!("close code must be 1000, 1012, 1013 or 3000-4999, not {code}"),
        ));
    }
    if reason.len() > 123 {
        return Err(Error::bad_request(
            ErrorCode::InvalidCloseReason,
            "close reason must be at most 123 bytes",
        ));
    }
    Ok(())
}
