\set base random(0, 100000)
INSERT INTO executions SELECT 'exec_' || ((:base + g) % 30000), 'acme', 'u', 't', 'a', 'running', 0, NULL, (SELECT big FROM blob), g, 0, 0 FROM generate_series(1, 42) g
ON CONFLICT (execution_id) DO UPDATE SET state = excluded.state, completed_at_ms = excluded.completed_at_ms, seq = excluded.seq, replay_from = excluded.replay_from, record = excluded.record;
