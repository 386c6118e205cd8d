"""Simulator ground truth: runs, per machine and time the hidden health, true RUL and active fault, and events."""

COMMON = """
CREATE TABLE sim_runs (
    run_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scenario        text NOT NULL,
    seed            bigint NOT NULL,
    start_time      timestamptz NOT NULL,
    sample_period_s float8 NOT NULL,
    params          jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Machines are named by their path (tenant/site/line/machine), not by machine_id: the simulator knows the truth
-- before ingest has registered the machine, and a run's truth outlives a reset of the registry.
CREATE TABLE sim_truth (
    run_id       bigint NOT NULL REFERENCES sim_runs ON DELETE CASCADE,
    machine      text NOT NULL,
    time         timestamptz NOT NULL,
    health       float8 NOT NULL CHECK (health BETWEEN 0 AND 1),
    rul_hours    float8 NOT NULL CHECK (rul_hours >= 0),
    fault        boolean NOT NULL,
    fault_type   text NOT NULL DEFAULT '',
    fault_sensor text NOT NULL DEFAULT '',
    fault_onset  timestamptz,
    failure_mode text NOT NULL,
    condition    text NOT NULL,
    running      boolean NOT NULL,
    PRIMARY KEY (run_id, machine, time)
);
CREATE INDEX sim_truth_machine_time_idx ON sim_truth (machine, time);

CREATE TABLE sim_events (
    run_id  bigint NOT NULL REFERENCES sim_runs ON DELETE CASCADE,
    machine text NOT NULL,
    time    timestamptz NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('failure', 'repair', 'maintenance', 'fault_onset', 'fault_end')),
    detail  text NOT NULL DEFAULT ''
);
CREATE INDEX sim_events_run_idx ON sim_events (run_id, machine, time);
"""
