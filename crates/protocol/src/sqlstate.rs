//! SQLSTATE codes the pooler itself raises.

pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const CONNECTION_EXCEPTION: &str = "08000";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const QUERY_CANCELED: &str = "57014";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const SYNTAX_ERROR: &str = "42601";
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
