-- Who made a manual adjustment (an API key id), so every change of a
-- balance by hand can be traced to a credential.
ALTER TABLE ledger_entries ADD COLUMN actor TEXT NOT NULL DEFAULT '';
