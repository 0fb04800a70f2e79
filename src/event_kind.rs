//! What happened, as events name it: every kind the server emits, one
//! variant each. Stored and streamed events carry the name as text.

crate::named::named_enum! {
    EventKind {
        OpStarted = "op.started",
        OpCompleted = "op.completed",
        OpFailed = "op.failed",
        OpProgress = "op.progress",
        OpCancelled = "op.cancelled",
        ElementCreated = "element.created",
        ElementUpdated = "element.updated",
        ElementMetaUpdated = "element.meta_updated",
        ElementReadmeUpdated = "element.readme_updated",
        ElementDeleted = "element.deleted",
        ElementEnabled = "element.enabled",
        ElementDisabled = "element.disabled",
        ElementRestored = "element.restored",
        ElementImported = "element.imported",
        ElementPushed = "element.pushed",
        ElementComposed = "element.composed",
        ElementPromoted = "element.promoted",
        SourcePromoted = "source.promoted",
        SourceRolledBack = "source.rolled_back",
        SourceRepaired = "source.repaired",
        TokenRotated = "token.rotated",
        TokenRevoked = "token.revoked",
        WsConnectionOpened = "ws.connection.opened",
        WsConnectionClosed = "ws.connection.closed",
        WsConnectionRejected = "ws.connection.rejected",
        WsHookFailed = "ws.hook.failed",
        WsMessageReceived = "ws.message.received",
        WsMessageSent = "ws.message.sent",
        WsBroadcastCompleted = "ws.broadcast.completed",
        WebhookTest = "webhook.test",
    }
}

impl PartialEq<EventKind> for String {
    fn eq(&self, other: &EventKind) -> bool {
        self == other.as_str()
    }
}
