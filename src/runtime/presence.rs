//! Who is connected where, across the nodes sharing the database (as
//! Centrifuge's `PresenceManager`): admission under `max_connections`,
//! a connection's rooms, and the connections other nodes hold.
//!
//! Changes on a client's path ([`PresenceManager::rooms`],
//! [`PresenceManager::gone`]) only queue: they never wait and never
//! touch the database. Questions answer after the database did and
//! return a boxed future: the part is used as `dyn PresenceManager`
//! (the engine is chosen at start), and they come from REST ops and
//! upgrades that already make a database round trip, so one allocation
//! per call is noise. The runtime skips them entirely when alone.

use super::key::HubKey;
use crate::error::Result;
use crate::store::presence::RemoteConnection;
use futures::future::BoxFuture;
use serde_json::Value;

pub trait PresenceManager: Send + Sync + 'static {
    /// Reserves a presence row for a new connection under `max`
    /// connections of the hub on every live node; false when they
    /// already hold `max`.
    fn admit<'a>(
        &'a self,
        hub: &'a HubKey,
        connection_id: &'a str,
        max: usize,
        rooms: &'a [String],
        remote: &'a str,
        user: Option<(&'a str, Option<&'a Value>)>,
    ) -> BoxFuture<'a, Result<bool>>;

    /// A connection's rooms changed (join/leave). Never waits.
    fn rooms(&self, connection_id: &str, rooms: Vec<String>);

    /// A connection (or a reservation that never became one) ended.
    /// Never waits.
    fn gone(&self, connection_id: &str);

    /// The other live node holding the connection, if one does.
    fn holder<'a>(
        &'a self,
        hub: &'a HubKey,
        connection_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>>;

    /// How many connections of the hub other live nodes hold (optionally
    /// members of `room`).
    fn remote_count<'a>(
        &'a self,
        hub: &'a HubKey,
        room: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize>>;

    /// Connections of the hub held by other live nodes (optionally
    /// members of `room`, or of `user`), oldest first.
    fn remote_connections<'a>(
        &'a self,
        hub: &'a HubKey,
        room: Option<&'a str>,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RemoteConnection>>>;

    /// A user's first connection on this node joined `room` (`joined`),
    /// or its last one here left it. The part decides, once across every
    /// node, whether that is the user's arrival or leaving, and has the
    /// room's members told. Never waits.
    fn user_moved(&self, hub: &HubKey, room: &str, user: &str, info: Option<Value>, joined: bool);
}
