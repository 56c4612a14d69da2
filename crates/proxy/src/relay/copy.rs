//! COPY tracking. A COPY changes the rules of the conversation: while the server is in
//! copy-in, nothing may be appended behind the client's messages (it would land inside the
//! copy data), and after an extended-protocol COPY FROM STDIN starts, the server ignores the
//! Syncs already sent behind its Execute, so they will never be answered.

#[derive(Default)]
pub(super) struct CopyTracker {
    /// A COPY may run in this transaction: the LSN is asked afterwards, not appended.
    seen: bool,
    /// Whether the last copy-relevant client message was an Execute, and how many Syncs
    /// followed it: if that Execute starts a COPY FROM STDIN, the server ignores them.
    syncs_after_execute: Option<usize>,
    /// The server is in copy-in mode for an extended-protocol COPY: Syncs are ignored.
    in_extended: bool,
    /// The last unnamed Parse may be a COPY, for the Binds that follow it.
    unnamed: bool,
}

impl CopyTracker {
    pub(super) fn seen(&self) -> bool {
        self.seen
    }

    /// A statement that may be a COPY is about to run.
    pub(super) fn may_run(&mut self, copy: bool) {
        self.seen |= copy;
    }

    pub(super) fn unnamed_parsed(&mut self, copy: bool) {
        self.unnamed = copy;
    }

    pub(super) fn unnamed(&self) -> bool {
        self.unnamed
    }

    pub(super) fn execute_sent(&mut self) {
        self.syncs_after_execute = Some(0);
    }

    /// Whether the server will ignore a Sync now (it is in extended copy-in).
    pub(super) fn ignores_sync(&self) -> bool {
        self.in_extended
    }

    pub(super) fn sync_sent(&mut self) {
        if let Some(n) = &mut self.syncs_after_execute {
            *n += 1;
        }
    }

    /// A simple Query: no Execute is pending any more.
    pub(super) fn query_sent(&mut self, copy: bool) {
        self.syncs_after_execute = None;
        self.seen |= copy;
    }

    /// CopyDone or CopyFail: the server answers Syncs again.
    pub(super) fn copy_in_ended(&mut self) {
        self.in_extended = false;
    }

    /// The server's CopyInResponse. For an extended-protocol COPY, returns how many Syncs
    /// sent after its Execute the server will ignore.
    pub(super) fn copy_in_started(&mut self) -> Option<usize> {
        let n = self.syncs_after_execute.take()?;
        self.in_extended = true;
        Some(n)
    }
}

impl super::Relay<'_, '_, '_> {
    /// The server's CopyInResponse: the Syncs it will ignore are no longer owed an answer,
    /// and the COPY data that follows must end with CopyDone/CopyFail and a Sync.
    pub(super) fn copy_in_response(&mut self) {
        if let Some(n) = self.copy.copy_in_started() {
            self.out.ready = self.out.ready.saturating_sub(n);
            self.out.sent = self.out.sent.saturating_sub(n as u64);
            self.out.unsynced = true;
        }
    }
}
