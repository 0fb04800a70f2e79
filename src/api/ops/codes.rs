//! Which error codes each op answers, for OpenAPI: the codes every op
//! can meet on its way in, the codes of its own checks, and those of the
//! service work it asks for. A test holds the list to the enum, so a new
//! code is placed somewhere.

use crate::error_codes::ErrorCode::{self, *};

/// On the way in: token, addressing, the policy gate, state, the query.
pub const EVERY_OP: &[ErrorCode] = &[
    Unauthorized,
    Forbidden,
    AuthThrottled,
    TokenRevoked,
    IpNotAllowed,
    OriginNotAllowed,
    NotFound,
    ElementNotFound,
    OpNotFound,
    MethodNotAllowed,
    InvalidSlug,
    InvalidQuery,
    ElementDeleted,
    ElementDisabled,
    DatabaseBusy,
    Internal,
];

/// Ops that count against attached rate limits.
pub const RATED: &[ErrorCode] = &[RateLimited];

/// Ops that read a body.
pub const BODY: &[ErrorCode] = &[
    InvalidBody,
    InvalidJson,
    MissingField,
    BodyTooLarge,
    BodyTimeout,
    BodyReadFailed,
    UnsupportedEncoding,
];

/// The one write path and its write rules.
const WRITE_PATH: &[ErrorCode] = &[
    ConcurrentUpdate,
    QuotaExceeded,
    InvalidSpec,
    SpecInvalid,
    ReadOnlyField,
    RedactedValue,
    SealedValueRefused,
    PathConflict,
    DrivenLinkLimit,
    VariableNotFound,
    VariableInUse,
    VariableInvalid,
    InvalidCidr,
];

/// Releases of demo and live.
const RELEASES: &[ErrorCode] = &[
    InvalidEnvironment,
    InvalidMessage,
    InvalidPromotion,
    BranchMissing,
    SourceInvalid,
    SourceDrift,
    PromotionConflict,
    NotPromoted,
    NoRelease,
    VersionNotFound,
];

/// A manifest's members released together.
const MANIFEST: &[ErrorCode] = &[
    NotAManifest,
    InvalidEnvironment,
    InvalidMessage,
    MemberNotFound,
    PromoteDemoFirst,
    PromotionConflict,
    SnapshotNotFound,
    SourceInvalid,
    BranchMissing,
    VersionNotFound,
];

/// Fan-out to connections, wherever they are held.
const REALTIME: &[ErrorCode] = &[
    InvalidEnvironment,
    WsNotLive,
    WsLinkManaged,
    WsConnectionNotFound,
    WsConnectionFailed,
    WsMessageTooLarge,
    WsSendQueueFull,
    InvalidRoom,
    RoomsDisabled,
    InvalidCloseCode,
    InvalidCloseReason,
    InvalidUser,
    ClusterBusy,
];

/// Long ops, which stop when their caller leaves (nobody reads it then,
/// but the run and the `op.cancelled` event carry it).
const LONG: &[ErrorCode] = &[OpCancelled];

/// Reading the element's repository.
const REPO: &[ErrorCode] = &[
    InvalidBranch,
    InvalidPath,
    RepositoryMissing,
    BranchNotFound,
    FileTooLarge,
];

/// The codes of an op's own checks and of the service work it asks for.
pub fn own(op: &str) -> Vec<ErrorCode> {
    let parts: &[&[ErrorCode]] = match op {
        "version" => &[&[InvalidLimit]],
        "activity" => &[&[InvalidCursor, InvalidLimit]],
        "list" => &[&[InvalidCursor, InvalidState, InvalidLimit, UnknownType]],
        "stats" => &[&[InvalidPeriod, InvalidEnvironment]],
        "batch_stats" => &[&[InvalidPeriod]],
        "create" => &[
            &[
                ReservedSlug,
                InvalidName,
                InvalidIntention,
                InvalidParent,
                UnknownType,
                AlreadyExists,
            ],
            WRITE_PATH,
        ],
        "update" => &[&[InvalidName, InvalidIntention], WRITE_PATH],
        "update_meta" => &[&[InvalidMeta], WRITE_PATH],
        "delete" => &[
            &[ConfirmationRequired, HasChildren, HasConnections],
            WRITE_PATH,
        ],
        "enable" | "disable" => &[&[InvalidReason], WRITE_PATH],
        "restore" => &[&[InvalidVersion, VersionNotFound], WRITE_PATH],
        "readme" | "source" | "source_validate" => &[REPO],
        "source_branches" | "source_status" => &[&[RepositoryMissing]],
        "source_repair" => &[&[RepositoryMissing], LONG],
        "readme_update" => &[&[InvalidContent], WRITE_PATH],
        "source_promote" => &[RELEASES],
        "source_rollback" => &[
            &[
                InvalidCommit,
                InvalidVersion,
                AmbiguousCommit,
                CommitNotFound,
            ],
            RELEASES,
        ],
        "source_promotions" => &[&[InvalidEnvironment, InvalidLimit]],
        "export_bundle" => &[&[RepositoryMissing, GitFailed], LONG],
        "import_bundle" => &[
            &[
                ImportToCircle,
                InvalidBundle,
                SpecYamlInvalid,
                TypeMismatch,
                RepositoryExists,
            ],
            WRITE_PATH,
            LONG,
        ],
        "compose" | "remove-modifier" => &[&[
            EmptyCompose,
            InvalidRef,
            RefNotFound,
            InvalidAttachment,
            InvalidCascade,
            InvalidPriority,
            AlreadyAttached,
            AttachmentNotFound,
            VersionNotFound,
        ]],
        "context" => &[&[InvalidDepth, UnknownType]],
        "tree" => &[&[InvalidDepth]],
        "promote" => &[MANIFEST, LONG],
        "promote_preview" | "environments" => &[MANIFEST],
        "snapshots" => &[&[NotAManifest, InvalidLimit, InvalidEnvironment]],
        "accept" => &[&[WsNotExposed]],
        "send" | "broadcast" | "close" | "connections" | "receive" | "presence" => &[REALTIME],
        "history" => &[REALTIME, &[HistoryDisabled, InvalidLimit]],
        "series" => &[&[InvalidEnvironment, WsNotLive]],
        "test_connection" => &[&[InvalidEnvironment, NoRelease]],
        "rotate" => &[&[InvalidGrace]],
        "deliveries" => &[&[InvalidLimit]],
        "redeliver" => &[&[DeliveryNotFound]],
        _ => &[],
    };
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// Codes no REST op answers: git over HTTP, the upgrade and its wire,
/// event streams, the console and routes outside the op table.
pub const ELSEWHERE: &[ErrorCode] = &[
    SmartHttpOnly,
    GitBusy,
    GitRequestTooLarge,
    PushRulesUnavailable,
    UpgradeRequired,
    InvalidHandshake,
    WsEndpointNotFound,
    WsMaxConnectionsReached,
    WsMessageIncomplete,
    WsServerBuffersFull,
    WsTokenInvalid,
    WsTokenExpired,
    WsHookBusy,
    WsHookFailed,
    WsHookRefused,
    RoomForbidden,
    TooManyRooms,
    InvalidRecover,
    ServerBusy,
    TooManyConnections,
    TooManyStreams,
    InvalidLastEventId,
    RouteNotFound,
    TypeNotFound,
    NotImplemented,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_placed() {
        let types = crate::types::Registry::load().unwrap();
        let mut placed: Vec<ErrorCode> = EVERY_OP
            .iter()
            .chain(RATED)
            .chain(BODY)
            .chain(ELSEWHERE)
            .copied()
            .collect();
        for op in super::super::HANDLED {
            placed.extend(own(op));
        }
        let missing: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| !placed.contains(c))
            .map(|c| c.as_str())
            .collect();
        assert!(missing.is_empty(), "codes no op lists: {missing:?}");
        // The codes the types declare are codes of the enum.
        for t in types.all() {
            for c in &t.def.error_codes {
                assert!(
                    ErrorCode::ALL.iter().any(|k| k.as_str() == c.code),
                    "{} declares {}, which no variant names",
                    t.name(),
                    c.code
                );
            }
        }
    }
}
