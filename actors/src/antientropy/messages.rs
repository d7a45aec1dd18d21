//! The anti-entropy actor's public messages: [`SyncNow`], [`GetAntiEntropyStatus`].
//! (It also handles `CallsFailed`, defined by the peer actor.)

use actix::prelude::*;

use super::status::AntiEntropyStatus;

/// Start a full round now (if none runs); replies whether one was started.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "bool")]
pub struct SyncNow;

/// Ask for the [`AntiEntropyStatus`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "AntiEntropyStatus")]
pub struct GetAntiEntropyStatus;
