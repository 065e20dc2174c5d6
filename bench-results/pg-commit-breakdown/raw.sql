INSERT INTO raw SELECT nextval('gs'), 'exec_' || g, 'phase_changed', (SELECT ev FROM blob) FROM generate_series(1, 167) g;
