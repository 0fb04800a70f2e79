//! Every error code the API answers with, one variant each: handlers,
//! the service and the runtime name them, and OpenAPI lists them.

use serde::Serialize;

crate::named::named_enum! {
    ErrorCode {
        AlreadyAttached = "ALREADY_ATTACHED",
        AlreadyExists = "ALREADY_EXISTS",
        AmbiguousCommit = "AMBIGUOUS_COMMIT",
        AttachmentNotFound = "ATTACHMENT_NOT_FOUND",
        AuthThrottled = "AUTH_THROTTLED",
        BodyReadFailed = "BODY_READ_FAILED",
        BodyTimeout = "BODY_TIMEOUT",
        BodyTooLarge = "BODY_TOO_LARGE",
        BranchMissing = "BRANCH_MISSING",
        BranchNotFound = "BRANCH_NOT_FOUND",
        ClusterBusy = "CLUSTER_BUSY",
        CommitNotFound = "COMMIT_NOT_FOUND",
        ConcurrentUpdate = "CONCURRENT_UPDATE",
        ConfirmationRequired = "CONFIRMATION_REQUIRED",
        DatabaseBusy = "DATABASE_BUSY",
        DeliveryNotFound = "DELIVERY_NOT_FOUND",
        DrivenLinkLimit = "DRIVEN_LINK_LIMIT",
        ElementDeleted = "ELEMENT_DELETED",
        ElementDisabled = "ELEMENT_DISABLED",
        ElementNotFound = "ELEMENT_NOT_FOUND",
        EmptyCompose = "EMPTY_COMPOSE",
        FileTooLarge = "FILE_TOO_LARGE",
        Forbidden = "FORBIDDEN",
        GitBusy = "GIT_BUSY",
        GitFailed = "GIT_FAILED",
        GitRequestTooLarge = "GIT_REQUEST_TOO_LARGE",
        HasChildren = "HAS_CHILDREN",
        HasConnections = "HAS_CONNECTIONS",
        HistoryDisabled = "HISTORY_DISABLED",
        ImportToCircle = "IMPORT_TO_CIRCLE",
        Internal = "INTERNAL",
        InvalidAttachment = "INVALID_ATTACHMENT",
        InvalidBody = "INVALID_BODY",
        InvalidBranch = "INVALID_BRANCH",
        InvalidBundle = "INVALID_BUNDLE",
        InvalidCascade = "INVALID_CASCADE",
        InvalidCidr = "INVALID_CIDR",
        InvalidCloseCode = "INVALID_CLOSE_CODE",
        InvalidCloseReason = "INVALID_CLOSE_REASON",
        InvalidCommit = "INVALID_COMMIT",
        InvalidContent = "INVALID_CONTENT",
        InvalidCursor = "INVALID_CURSOR",
        InvalidDepth = "INVALID_DEPTH",
        InvalidEnvironment = "INVALID_ENVIRONMENT",
        InvalidGrace = "INVALID_GRACE",
        InvalidHandshake = "INVALID_HANDSHAKE",
        InvalidIntention = "INVALID_INTENTION",
        InvalidJson = "INVALID_JSON",
        InvalidLastEventId = "INVALID_LAST_EVENT_ID",
        InvalidLimit = "INVALID_LIMIT",
        InvalidMessage = "INVALID_MESSAGE",
        InvalidMeta = "INVALID_META",
        InvalidName = "INVALID_NAME",
        InvalidParent = "INVALID_PARENT",
        InvalidPath = "INVALID_PATH",
        InvalidPeriod = "INVALID_PERIOD",
        InvalidPriority = "INVALID_PRIORITY",
        InvalidPromotion = "INVALID_PROMOTION",
        InvalidQuery = "INVALID_QUERY",
        InvalidReason = "INVALID_REASON",
        InvalidRecover = "INVALID_RECOVER",
        InvalidRef = "INVALID_REF",
        InvalidRoom = "INVALID_ROOM",
        InvalidSlug = "INVALID_SLUG",
        InvalidSpec = "INVALID_SPEC",
        InvalidState = "INVALID_STATE",
        InvalidUser = "INVALID_USER",
        InvalidVersion = "INVALID_VERSION",
        IpNotAllowed = "IP_NOT_ALLOWED",
        MemberNotFound = "MEMBER_NOT_FOUND",
        MethodNotAllowed = "METHOD_NOT_ALLOWED",
        MissingField = "MISSING_FIELD",
        NotAManifest = "NOT_A_MANIFEST",
        NotFound = "NOT_FOUND",
        NotImplemented = "NOT_IMPLEMENTED",
        NotPromoted = "NOT_PROMOTED",
        NoRelease = "NO_RELEASE",
        OpNotFound = "OP_NOT_FOUND",
        OriginNotAllowed = "ORIGIN_NOT_ALLOWED",
        PathConflict = "PATH_CONFLICT",
        PromoteDemoFirst = "PROMOTE_DEMO_FIRST",
        PromotionConflict = "PROMOTION_CONFLICT",
        PushRulesUnavailable = "PUSH_RULES_UNAVAILABLE",
        QuotaExceeded = "QUOTA_EXCEEDED",
        RateLimited = "RATE_LIMITED",
        ReadOnlyField = "READ_ONLY_FIELD",
        RedactedValue = "REDACTED_VALUE",
        RefNotFound = "REF_NOT_FOUND",
        RepositoryExists = "REPOSITORY_EXISTS",
        RepositoryMissing = "REPOSITORY_MISSING",
        ReservedSlug = "RESERVED_SLUG",
        RoomForbidden = "ROOM_FORBIDDEN",
        RoomsDisabled = "ROOMS_DISABLED",
        RouteNotFound = "ROUTE_NOT_FOUND",
        SealedValueRefused = "SEALED_VALUE_REFUSED",
        ServerBusy = "SERVER_BUSY",
        SmartHttpOnly = "SMART_HTTP_ONLY",
        SnapshotNotFound = "SNAPSHOT_NOT_FOUND",
        SourceDrift = "SOURCE_DRIFT",
        SourceInvalid = "SOURCE_INVALID",
        SpecInvalid = "SPEC_INVALID",
        SpecYamlInvalid = "SPEC_YAML_INVALID",
        TokenRevoked = "TOKEN_REVOKED",
        TooManyConnections = "TOO_MANY_CONNECTIONS",
        TooManyRooms = "TOO_MANY_ROOMS",
        TooManyStreams = "TOO_MANY_STREAMS",
        TypeMismatch = "TYPE_MISMATCH",
        TypeNotFound = "TYPE_NOT_FOUND",
        Unauthorized = "UNAUTHORIZED",
        UnknownType = "UNKNOWN_TYPE",
        UnsupportedEncoding = "UNSUPPORTED_ENCODING",
        UpgradeRequired = "UPGRADE_REQUIRED",
        VariableInUse = "VARIABLE_IN_USE",
        VariableInvalid = "VARIABLE_INVALID",
        VariableNotFound = "VARIABLE_NOT_FOUND",
        VersionNotFound = "VERSION_NOT_FOUND",
        WsConnectionFailed = "WS_CONNECTION_FAILED",
        WsConnectionNotFound = "WS_CONNECTION_NOT_FOUND",
        WsEndpointNotFound = "WS_ENDPOINT_NOT_FOUND",
        WsLinkManaged = "WS_LINK_MANAGED",
        WsMaxConnectionsReached = "WS_MAX_CONNECTIONS_REACHED",
        WsMessageIncomplete = "WS_MESSAGE_INCOMPLETE",
        WsMessageTooLarge = "WS_MESSAGE_TOO_LARGE",
        WsNotExposed = "WS_NOT_EXPOSED",
        WsNotLive = "WS_NOT_LIVE",
        WsSendQueueFull = "WS_SEND_QUEUE_FULL",
        WsServerBuffersFull = "WS_SERVER_BUFFERS_FULL",
        WsTokenExpired = "WS_TOKEN_EXPIRED",
        WsTokenInvalid = "WS_TOKEN_INVALID",
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<ErrorCode> for &str {
    fn eq(&self, other: &ErrorCode) -> bool {
        *self == other.as_str()
    }
}
