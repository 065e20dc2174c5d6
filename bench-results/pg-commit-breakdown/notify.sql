SELECT pg_notify('agentrack_events', repeat('12:345678,', 64));
