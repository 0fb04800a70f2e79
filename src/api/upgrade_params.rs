//! An upgrade's own query parameters, `?recover=` and `?rooms=`, checked
//! against the element's spec before anything is opened.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::runtime::{check_position, check_room, Position, WsSpec};
use std::collections::HashSet;

/// `?recover=room:epoch:offset,…` (split from the right, so a room may
/// hold `:`; an empty room is the stream of messages to no room).
pub(super) fn recover_param(
    spec: &WsSpec,
    params: &[(String, String)],
) -> Result<Vec<(String, Position)>> {
    let bad = |why: String| Error::bad_request(ErrorCode::InvalidRecover, why);
    let mut out: Vec<(String, Position)> = Vec::new();
    // Duplicates found by a set: a list scanned for each entry made a
    // long query (thousands of names, from anyone who may connect) cost
    // time in the square of its length.
    let mut seen: HashSet<&str> = HashSet::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "recover") {
        if !spec.history.on() {
            return Err(bad(
                "this element keeps no history (history.size is 0): connect without ?recover="
                    .into(),
            ));
        }
        for entry in v.split(',').filter(|e| !e.is_empty()) {
            let shown = crate::error::shown(entry);
            let mut parts = entry.rsplitn(3, ':');
            let (Some(offset), Some(epoch), Some(room)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(format!("'{shown}' is not room:epoch:offset")));
            };
            let offset = offset
                .parse::<u64>()
                .map_err(|_| bad(format!("'{shown}': the offset is not a whole number")))?;
            let since = Position {
                epoch: epoch.to_string(),
                offset,
            };
            check_position(&since)?;
            if !room.is_empty() {
                check_room(room)?;
            }
            if !seen.insert(room) {
                return Err(bad(format!(
                    "room '{}' is recovered twice",
                    crate::error::shown(room)
                )));
            }
            out.push((room.to_string(), since));
        }
    }
    Ok(out)
}

/// `?rooms=a,b`: checked names, no duplicates, within the spec's limits;
/// a recovered room is joined too.
pub(super) fn rooms_param(
    spec: &WsSpec,
    params: &[(String, String)],
    recover: &[(String, Position)],
) -> Result<Vec<String>> {
    let mut rooms: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "rooms") {
        for r in v.split(',').filter(|r| !r.is_empty()) {
            check_room(r)?;
            if seen.insert(r) {
                rooms.push(r.to_string());
            }
        }
    }
    for (r, _) in recover.iter().filter(|(r, _)| !r.is_empty()) {
        if seen.insert(r) {
            rooms.push(r.clone());
        }
    }
    if rooms.is_empty() {
        return Ok(rooms);
    }
    if !spec.rooms.enabled {
        return Err(Error::bad_request(
            ErrorCode::RoomsDisabled,
            "this element has rooms.enabled false; connect without ?rooms=",
        ));
    }
    let max = spec.rooms.max_rooms_per_connection;
    if rooms.len() > max {
        return Err(Error::bad_request(
            ErrorCode::TooManyRooms,
            format!("at most {max} rooms per connection, not {}", rooms.len()),
        ));
    }
    Ok(rooms)
}
