//! The handshake: the client's hello, checked, and the server's welcome.

use super::Session;
use crate::Transport;
use crate::conn::ConnError;
use crate::logging::{AUTH_FAILED, NOT_A_CLIENT};
use crate::security::Access;
use crate::storage::Storage;
use framekit_codec::message;
use framekit_transfer::{ErrorCode, Hello, MAGIC, Response, VERSION, Welcome};
use tracing::{debug, info, warn};

impl<S: Transport, B: Storage> Session<S, B> {
    /// Reads the client's hello, whole by `deadline` if given (else within
    /// the idle timeout), and checks it and its token. `Ok(false)` if the
    /// client left without saying anything, or was refused (and told why).
    /// The welcome is [`Session::welcome`].
    pub(super) async fn hello(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<bool, ConnError> {
        let read = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.conn.read_frame())
                .await
                .unwrap_or(Err(ConnError::Timeout)),
            None => self.conn.read_frame().await,
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(false),
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                // Whatever this peer speaks, it is not our framing.
                if let [0x16, 0x03, ..] = self.conn.buffered() {
                    NOT_A_CLIENT.log(|| info!("a TLS client connected to this plain-text server"));
                }
                self.refuse(ErrorCode::BadMagic, "not a framekit client")
                    .await?;
                self.conn.shutdown().await;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        if !frame.starts_with(&MAGIC) {
            self.refuse(ErrorCode::BadMagic, "not a framekit client")
                .await?;
            self.conn.shutdown().await;
            NOT_A_CLIENT.log(|| debug!("refused: bad magic"));
            return Ok(false);
        }
        // The hello's layout is the magic, then a u16 version, in every
        // version: look at the version before decoding the rest, which a
        // later version may lay out differently.
        if let Some(&[low, high]) = frame.get(MAGIC.len()..MAGIC.len() + 2)
            && u16::from_le_bytes([low, high]) != VERSION
        {
            let version = u16::from_le_bytes([low, high]);
            let message = format!(
                "the server speaks protocol version {VERSION}, the client version {version}"
            );
            self.refuse(ErrorCode::UnsupportedVersion, message).await?;
            self.conn.shutdown().await;
            NOT_A_CLIENT.log(|| info!(version, "refused: unsupported version"));
            return Ok(false);
        }
        let hello: Hello = match message::decode(&frame) {
            Ok(hello) => hello,
            Err(e) => {
                self.refuse(ErrorCode::BadRequest, e.to_string()).await?;
                self.conn.shutdown().await;
                return Err(e.into());
            }
        };
        if let Some(tokens) = &self.shared.config.tokens {
            match tokens.check(hello.token.as_deref()) {
                Some(access) => {
                    self.access = access;
                    // Only full access forgives: a read-only token must
                    // not let its holder guess the others at full speed.
                    if let (Some(ip), Access::ReadWrite) = (self.peer, access) {
                        self.shared.limiter.success(ip);
                    }
                }
                None => {
                    let delay = self.shared.limiter.failure(
                        self.peer,
                        hello.token.as_deref(),
                        std::time::Instant::now(),
                    );
                    let missing = hello.token.is_none();
                    AUTH_FAILED.log(|| {
                        warn!(
                            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            token = if missing { "missing" } else { "wrong" },
                            "authentication failed"
                        );
                    });
                    tokio::time::sleep(delay).await;
                    let message = if missing {
                        "this server requires an access token"
                    } else {
                        "the access token was not accepted"
                    };
                    self.refuse(ErrorCode::Unauthorized, message).await?;
                    self.conn.shutdown().await;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Welcomes a client whose hello was accepted.
    pub(super) async fn welcome(&mut self) -> Result<(), ConnError> {
        let config = &self.shared.config;
        let welcome = Welcome {
            version: VERSION,
            max_file_size: config.max_file_size,
            max_message_len: u32::try_from(framekit_transfer::MAX_MESSAGE_LEN).unwrap_or(u32::MAX),
            idle_timeout_ms: u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            read_only: self.access == Access::ReadOnly,
        };
        self.conn.send(&Response::Welcome(welcome)).await
    }
}
