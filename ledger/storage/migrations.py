"""The SQLite schema: numbered migrations, applied in order and recorded in ``PRAGMA user_version``
(by ``ledger.storage.engine.migrate``).

Each entry is one migration; never edit a released one, append a new one instead.
All times are stored as REAL POSIX seconds (UTC).
"""

from __future__ import annotations

# wakes held for a thread's next scheduled beat (migration 2, the same on both backends)
_HELD_WAKES = """
    CREATE TABLE held_wakes (
        thread_id TEXT PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
        event_text TEXT NOT NULL,
        events INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL
    );
"""

# HEARTBEAT.md's revisions (migration 5, the same table on both backends)
_INSTRUCTIONS = """
    CREATE TABLE instructions (
        revision INTEGER PRIMARY KEY,
        content TEXT NOT NULL,
        saved_at REAL NOT NULL
    );
"""

# PostgreSQL tells the replicas sharing the database what changed (``NOTIFY``), in the
# transaction that changed it: a run started (inserted ``running``) or finished (left
# ``running``), and a revision of the instructions saved. The channel is named after the
# table's schema (one database may hold several), the payload is a JSON array:
# ``["run", run id, thread id, started, writer]`` or ``["instructions", revision, writer]``,
# where ``writer`` is the ``heartbeat.writer`` setting of the connection that wrote it.
_NOTIFY = """
    CREATE FUNCTION heartbeat_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify(left('heartbeat ' || TG_TABLE_SCHEMA, 63), json_build_array(
            'run', NEW.id, NEW.thread_id, NEW.status = 'running',
            coalesce(current_setting('heartbeat.writer', true), ''))::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER runs_started AFTER INSERT ON runs
        FOR EACH ROW WHEN (NEW.status = 'running') EXECUTE FUNCTION heartbeat_run_changed();
    CREATE TRIGGER runs_finished AFTER UPDATE OF status ON runs
        FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
        EXECUTE FUNCTION heartbeat_run_changed();
    CREATE FUNCTION heartbeat_instructions_saved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify(left('heartbeat ' || TG_TABLE_SCHEMA, 63), json_build_array(
            'instructions', NEW.revision,
            coalesce(current_setting('heartbeat.writer', true), ''))::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER instructions_saved AFTER INSERT ON instructions
        FOR EACH ROW EXECUTE FUNCTION heartbeat_instructions_saved();
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: the whole first schema
    """
    CREATE TABLE threads (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        heartbeat_config_json TEXT,
        heartbeat_anchor REAL,
        heartbeat_next_run REAL,
        heartbeat_last_run REAL,
        heartbeat_last_summary TEXT,
        heartbeat_last_actions_json TEXT
    );
    CREATE INDEX threads_next_run ON threads (heartbeat_next_run);

    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        run_id INTEGER
    );
    CREATE INDEX messages_thread ON messages (thread_id, id);

    CREATE TABLE contradictions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
        statement_a TEXT NOT NULL,
        statement_b TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
        created_at REAL NOT NULL
    );
    CREATE INDEX contradictions_thread ON contradictions (thread_id, status);

    CREATE TABLE reflections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
        score REAL NOT NULL,
        summary TEXT NOT NULL,
        notable_json TEXT NOT NULL DEFAULT '[]',
        last_message_id INTEGER NOT NULL,
        run_id INTEGER,
        created_at REAL NOT NULL
    );
    CREATE INDEX reflections_thread ON reflections (thread_id, id);

    CREATE TABLE personality_profiles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        traits_json TEXT NOT NULL DEFAULT '[]',
        tone TEXT NOT NULL DEFAULT '',
        interests_json TEXT NOT NULL DEFAULT '[]',
        last_message_id INTEGER NOT NULL DEFAULT 0,
        run_id INTEGER,
        created_at REAL NOT NULL,
        UNIQUE (thread_id, version)
    );

    CREATE TABLE self_replies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reflection_id INTEGER NOT NULL UNIQUE REFERENCES reflections (id) ON DELETE CASCADE,
        thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
        content TEXT NOT NULL,
        run_id INTEGER,
        created_at REAL NOT NULL
    );

    CREATE TABLE ledger_posts (
        id TEXT PRIMARY KEY,
        author TEXT NOT NULL,
        title TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        run_id INTEGER
    );
    CREATE INDEX ledger_posts_created ON ledger_posts (created_at DESC, id DESC);

    CREATE TABLE ledger_comments (
        id TEXT PRIMARY KEY,
        post_id TEXT NOT NULL REFERENCES ledger_posts (id) ON DELETE CASCADE,
        author TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        run_id INTEGER
    );
    CREATE INDEX ledger_comments_post ON ledger_comments (post_id, created_at);

    CREATE TABLE ledger_votes (
        post_id TEXT NOT NULL REFERENCES ledger_posts (id) ON DELETE CASCADE,
        voter TEXT NOT NULL,
        direction INTEGER NOT NULL CHECK (direction IN (-1, 1)),
        created_at REAL NOT NULL,
        run_id INTEGER,
        PRIMARY KEY (post_id, voter)
    );

    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thread_id TEXT NOT NULL,
        loop TEXT NOT NULL,
        trigger TEXT NOT NULL
            CHECK (trigger IN ('schedule', 'manual', 'wake', 'catch_up')),
        slot REAL,
        status TEXT NOT NULL CHECK (status IN
            ('running', 'ok', 'dry_run', 'skipped', 'rejected', 'failed', 'interrupted')),
        reason TEXT,
        model TEXT,
        action TEXT,
        decision_json TEXT,
        executed_json TEXT,
        summary TEXT,
        dry_run INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        llm_ms REAL,
        started_at REAL NOT NULL,
        finished_at REAL,
        owner TEXT,
        UNIQUE (thread_id, loop, slot)
    );
    CREATE INDEX runs_thread ON runs (thread_id, id DESC);
    CREATE INDEX runs_status ON runs (status) WHERE status = 'running';
    CREATE INDEX runs_finished ON runs (finished_at);
    """,
    # 2: what woke a run; wakes held for a thread's next scheduled beat. SQLite cannot alter a
    # CHECK constraint, so the trigger's is widened in the stored schema text (its documented
    # writable_schema procedure, which keeps any column another migration added), then reloaded.
    """
    ALTER TABLE runs ADD COLUMN event_text TEXT;
    PRAGMA writable_schema = ON;
    UPDATE sqlite_master
        SET sql = replace(sql, '''catch_up'')', '''catch_up'', ''ledger_event'')')
        WHERE type = 'table' AND name = 'runs';
    PRAGMA writable_schema = RESET;
    """
    + _HELD_WAKES,
    # 3: what a thread's heartbeat remembers between beats; a day's runs of a thread, by time
    """
    CREATE TABLE beat_memos (
        thread_id TEXT PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
        fingerprint TEXT,
        decision_key TEXT,
        repeats INTEGER NOT NULL DEFAULT 0,
        last_cost INTEGER NOT NULL DEFAULT 0,
        failure TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        paused TEXT,
        pauses INTEGER NOT NULL DEFAULT 0,
        probe_at REAL,
        paused_config TEXT
    );
    CREATE INDEX runs_thread_started ON runs (thread_id, loop, started_at);
    """,
    # 4: the leases of the replicas sharing the database; threads by their last change (what
    # a replica re-reads of the threads another replica changed)
    """
    CREATE TABLE replicas (
        owner TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        renewed_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX threads_updated ON threads (updated_at);
    """,
    # 5: HEARTBEAT.md stored in the database (PostgreSQL keeps the instructions there), by
    # revision: the newest row is the current text
    _INSTRUCTIONS,
    # 6: the last decided beat's inputs split: all but the counted posts of others, and a
    # digest of each of those (space-separated)
    """
    ALTER TABLE beat_memos ADD COLUMN rest_fingerprint TEXT;
    ALTER TABLE beat_memos ADD COLUMN seen_posts TEXT;
    """,
)

# A migration whose SQLite text has no PostgreSQL rendering (``ledger.storage.pg_dialect``)
# gives PostgreSQL a script of its own, by number: what it does must be the same.
POSTGRES_SCRIPTS: dict[int, str] = {
    # 2: PostgreSQL alters the trigger's CHECK constraint in place (named as it names it)
    2: """
    ALTER TABLE runs ADD COLUMN event_text TEXT;
    ALTER TABLE runs DROP CONSTRAINT runs_trigger_check;
    ALTER TABLE runs ADD CONSTRAINT runs_trigger_check
        CHECK (trigger IN ('schedule', 'manual', 'wake', 'catch_up', 'ledger_event'));
    """
    + _HELD_WAKES,
    # 5: the same table, and the notifications of what changed
    5: _INSTRUCTIONS + _NOTIFY,
}
