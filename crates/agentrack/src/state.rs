//! Execution lifecycle states and the rules for moving between them.

use crate::parse::value_enum;

value_enum! {
    /// Where an execution is in its lifecycle.
    ///
    /// Alive: `Pending → Starting → Running → Completing`; terminal (final): `Completed`, `Failed`,
    /// `Timeout`, `Dead`, `Cancelled`.
    ///
    /// # Examples
    ///
    /// ```
    /// use agentrack::ExecutionState;
    ///
    /// let state: ExecutionState = "running".parse().unwrap();
    /// assert!(state.is_alive());
    /// let error = "finished".parse::<ExecutionState>().unwrap_err();
    /// assert!(error.to_string().contains("valid values: pending, starting, running"));
    /// ```
    ExecutionState, "execution state" {
        /// Created, not started.
        Pending => "pending",
        /// Started, waiting for the first heartbeat.
        Starting => "starting",
        /// Heartbeating and working.
        Running => "running",
        /// Wrapping up.
        Completing => "completing",
        /// Finished successfully.
        Completed => "completed",
        /// Finished with an error.
        Failed => "failed",
        /// Ran past its execution timeout.
        Timeout => "timeout",
        /// Stopped heartbeating.
        Dead => "dead",
        /// Cancelled by a caller.
        Cancelled => "cancelled",
    }
}

impl ExecutionState {
    /// The alive states, in lifecycle order.
    ///
    /// # Examples
    ///
    /// ```
    /// use agentrack::ExecutionState;
    ///
    /// assert!(ExecutionState::ALIVE.iter().all(|state| state.is_alive()));
    /// assert_eq!(ExecutionState::ALIVE.len() + ExecutionState::TERMINAL.len(), ExecutionState::ALL.len());
    /// ```
    pub const ALIVE: &'static [Self] = &[Self::Pending, Self::Starting, Self::Running, Self::Completing];

    /// The terminal states.
    pub const TERMINAL: &'static [Self] = &[
        Self::Completed,
        Self::Failed,
        Self::Timeout,
        Self::Dead,
        Self::Cancelled,
    ];

    /// Pending, starting, running or completing.
    pub const fn is_alive(self) -> bool {
        !self.is_terminal()
    }

    /// Completed, failed, timeout, dead or cancelled: nothing can change it any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Timeout | Self::Dead | Self::Cancelled
        )
    }

    /// Position in the alive sequence; terminal states have none.
    const fn rank(self) -> Option<u8> {
        match self {
            Self::Pending => Some(0),
            Self::Starting => Some(1),
            Self::Running => Some(2),
            Self::Completing => Some(3),
            _ => None,
        }
    }

    /// Whether the strict lifecycle allows `self → next`: forward along the alive sequence
    /// (skipping is allowed), or from any alive state to any terminal one.
    pub fn can_become(self, next: Self) -> bool {
        match (self.rank(), next.rank()) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(from), Some(to)) => to > from,
        }
    }

    /// The states `self` may become under the strict lifecycle.
    pub fn allowed_next(self) -> Vec<Self> {
        Self::ALL
            .iter()
            .copied()
            .filter(|next| self.can_become(*next))
            .collect()
    }
}

value_enum! {
    /// The state of a circuit breaker.
    BreakerState, "circuit breaker state" {
        /// Calls flow; failures are counted.
        Closed => "closed",
        /// Calls are refused until the recovery timeout passes.
        Open => "open",
        /// A limited number of trial calls decide whether to close or re-open.
        HalfOpen => "half_open",
    }
}
