//! Errors a client can see, with etcd's gRPC codes and exact messages.
//!
//! etcd clients match errors by their message text (Go's clientv3 maps them back through
//! `rpctypes.ErrorDesc`), so every string here is etcd's own (v3.4
//! `etcdserver/api/v3rpc/rpctypes/error.go`). This is the one place that maps errors to
//! the wire; handlers return [`EtcdError`] and `?` does the rest.

/// A request-level error. `Internal` and `Storage` are the only ones that are not a
/// normal answer to a bad or unlucky request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Not in etcd's gRPC error table: clients get its auth package's text, as Unknown.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl EtcdError {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey | InvalidSortOption
            | MemberBadUrls | RequestTooLarge | UserEmpty | RoleEmpty | AuthFailed | PermissionNotGiven
            | InvalidAuthMgmt | AuthOldRevision => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            Corrupt => Code::DataLoss,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotLeader
            | BadLeaderTransferee
            | RootUserNotExist
            | RootRoleNotExist
            | UserAlreadyExist
            | UserNotFound
            | RoleAlreadyExist
            | RoleNotFound
            | RoleNotGranted
            | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            NoLeader
            | LeaderChanged
            | Stopped
            | Timeout
            | NotSupportedForLearner
            | Unhealthy
            | LeaderTransferTimeout => Code::Unavailable,
            Internal(_) => Code::Internal,
            NoPasswordUser => Code::Unknown,
        }
    }

    /// A compact number for errors decided while applying a Raft command, so the
    /// outcome can travel in the command's response (and across the peer network).
    pub fn apply_code(&self) -> i32 {
        use EtcdError::*;
        match self {
            KeyNotFound => 1,
            LeaseNotFound => 2,
            LeaseExist => 3,
            Compacted => 4,
            FutureRev => 5,
            LeaseTtlTooLarge => 6,
            NoSpace => 7,
            MemberExist => 8,
            PeerUrlExist => 9,
            MemberNotFound => 10,
            MemberNotLearner => 11,
            InvalidSortOption => 12,
            RootUserNotExist => 13,
            RootRoleNotExist => 14,
            UserAlreadyExist => 15,
            UserEmpty => 16,
            UserNotFound => 17,
            RoleAlreadyExist => 18,
            RoleNotFound => 19,
            RoleEmpty => 20,
            AuthFailed => 21,
            PermissionNotGiven => 22,
            PermissionDenied => 23,
            RoleNotGranted => 24,
            PermissionNotGranted => 25,
            AuthNotEnabled => 26,
            InvalidAuthToken => 27,
            InvalidAuthMgmt => 28,
            AuthOldRevision => 29,
            NoPasswordUser => 30,
            Corrupt => 31,
            _ => 0,
        }
    }

    pub fn from_apply_code(code: i32) -> EtcdError {
        use EtcdError::*;
        match code {
            1 => KeyNotFound,
            2 => LeaseNotFound,
            3 => LeaseExist,
            4 => Compacted,
            5 => FutureRev,
            6 => LeaseTtlTooLarge,
            7 => NoSpace,
            8 => MemberExist,
            9 => PeerUrlExist,
            10 => MemberNotFound,
            11 => MemberNotLearner,
            12 => InvalidSortOption,
            13 => RootUserNotExist,
            14 => RootRoleNotExist,
            15 => UserAlreadyExist,
            16 => UserEmpty,
            17 => UserNotFound,
            18 => RoleAlreadyExist,
            19 => RoleNotFound,
            20 => RoleEmpty,
            21 => AuthFailed,
            22 => PermissionNotGiven,
            23 => PermissionDenied,
            24 => RoleNotGranted,
            25 => PermissionNotGranted,
            26 => AuthNotEnabled,
            27 => InvalidAuthToken,
            28 => InvalidAuthMgmt,
            29 => AuthOldRevision,
            30 => NoPasswordUser,
            31 => Corrupt,
            _ => Internal("apply failed".into()),
        }
    }
}

impl EtcdError {
    /// How grpc-go prints this error as a status (`rpc error: code = ... desc = ...`), as
    /// etcd puts it in a refused watch's cancel reason.
    pub fn as_go_status(&self) -> String {
        let code = match self.code() {
            tonic::Code::InvalidArgument => "InvalidArgument",
            tonic::Code::PermissionDenied => "PermissionDenied",
            tonic::Code::Unauthenticated => "Unauthenticated",
            tonic::Code::FailedPrecondition => "FailedPrecondition",
            tonic::Code::Unavailable => "Unavailable",
            tonic::Code::NotFound => "NotFound",
            tonic::Code::OutOfRange => "OutOfRange",
            tonic::Code::ResourceExhausted => "ResourceExhausted",
            tonic::Code::Unknown => "Unknown",
            _ => "Internal",
        };
        format!("rpc error: code = {code} desc = {self}")
    }

    /// The error as etcd's auth package words it, reported as Unknown: etcd's maintenance
    /// service passes its auth check's error on without translating it.
    pub fn as_auth_package_error(&self) -> tonic::Status {
        let text = match self {
            EtcdError::UserNotFound => "user not found".to_string(),
            e => e.to_string().trim_start_matches("etcdserver: ").to_string(),
        };
        tonic::Status::unknown(format!("auth: {text}"))
    }
}

impl From<EtcdError> for tonic::Status {
    fn from(e: EtcdError) -> tonic::Status {
        tonic::Status::new(e.code(), e.to_string())
    }
}

impl From<crate::engine::EngineError> for EtcdError {
    fn from(e: crate::engine::EngineError) -> EtcdError {
        EtcdError::Internal(e.to_string())
    }
}
