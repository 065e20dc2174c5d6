//! What to create: the arguments of [`Tracker::create`](crate::Tracker::create).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::TimeoutConfig;
use crate::state::ExecutionState;

/// The tenant of executions created without one.
pub const DEFAULT_TENANT: &str = "default";

/// What to create: see [`Tracker::create`](crate::Tracker::create).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewExecution {
    /// The agent that will run it.
    pub agent_name: String,
    /// The conversation thread.
    pub thread_id: String,
    /// The user it runs for.
    pub user_id: String,
    /// The owning tenant ([`DEFAULT_TENANT`] when `None`).
    pub tenant: Option<String>,
    /// The execution timeout; defaults to the timeout config's, then the tracker's.
    #[serde(default, with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Caller data.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Per-execution timeouts and breaker settings.
    pub timeout_config: Option<TimeoutConfig>,
    /// The state to start in (an alive one); `Pending` when `None`.
    pub initial_state: Option<ExecutionState>,
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&d.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(deserializer)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl NewExecution {
    /// An execution of `agent_name` for `user_id` in `thread_id`, with defaults for the rest.
    pub fn new(agent_name: impl Into<String>, thread_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self {
            agent_name: agent_name.into(),
            thread_id: thread_id.into(),
            user_id: user_id.into(),
            ..Self::default()
        }
    }

    /// Sets the execution timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets per-execution timeouts and breaker settings.
    pub fn timeout_config(mut self, config: TimeoutConfig) -> Self {
        self.timeout_config = Some(config);
        self
    }
}
