-- What the failed step was asked to do, as JSON, so an agent sees what a retry will do.
ALTER TABLE process_exceptions ADD COLUMN step_input text NOT NULL DEFAULT '';
