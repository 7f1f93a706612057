//! API keys: the gateway and every gRPC service share one key store
//! (`loyalty_common::auth::keys`); this module names it for the gateway.

/// Who is calling the gateway: the program and scope of a verified key.
pub use loyalty_common::auth::keys::VerifiedKey as Caller;
pub use loyalty_common::auth::keys::*;
