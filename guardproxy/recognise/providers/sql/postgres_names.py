"""What PostgreSQL's statements and built-in functions do, by name: the tables the
PostgreSQL reader (``postgres.py``) classifies parse trees with."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from guardproxy.action import Verb

__all__ = [
    "DBLINK",
    "DEFINITIONS",
    "DML",
    "DROP_DESTROYS",
    "DROP_PERMISSION",
    "EFFECTS",
    "NESTED",
    "OBJECT_WORDS",
    "PERMISSION_STATEMENTS",
    "READ_STATEMENTS",
    "SQL_ARGUMENT",
    "UPDATE_STATEMENTS",
    "VOLATILE_READS",
    "side_effect_free",
]


@cache
def side_effect_free() -> frozenset[str]:
    """Built-in function names PostgreSQL declares IMMUTABLE or STABLE (all overloads),
    from ``data/pg_functions.json`` (see ``postgres_catalog.py``)."""
    text = resources.files("guardproxy.recognise").joinpath("data/pg_functions.json")
    data = json.loads(text.read_text(encoding="utf-8"))
    return frozenset(data["side_effect_free"]) | VOLATILE_READS


# Volatile built-ins that only read or touch session state (random numbers, the clock,
# advisory locks, sizes and statistics, server files read): a SELECT of them is a read.
VOLATILE_READS = frozenset(
    [
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "currval",
        "lastval",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "current_query",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_all",
        "pg_advisory_unlock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "pg_blocking_pids",
        "pg_safe_snapshot_blocking_pids",
        "pg_isolation_test_session_is_blocked",
        "pg_lock_status",
        "pg_database_size",
        "pg_relation_size",
        "pg_table_size",
        "pg_total_relation_size",
        "pg_indexes_size",
        "pg_tablespace_size",
        "pg_is_in_recovery",
        "pg_is_wal_replay_paused",
        "pg_get_wal_replay_pause_state",
        "pg_current_wal_lsn",
        "pg_current_wal_flush_lsn",
        "pg_current_wal_insert_lsn",
        "pg_last_wal_receive_lsn",
        "pg_last_wal_replay_lsn",
        "pg_last_xact_replay_timestamp",
        "pg_last_committed_xact",
        "pg_xact_commit_timestamp",
        "pg_xact_commit_timestamp_origin",
        "pg_xact_status",
        "txid_status",
        "pg_prepared_xact",
        "pg_notification_queue_usage",
        "pg_control_checkpoint",
        "pg_control_init",
        "pg_control_recovery",
        "pg_control_system",
        "pg_current_logfile",
        "pg_get_backend_memory_contexts",
        "pg_get_shmem_allocations",
        "pg_get_wal_resource_managers",
        "pg_get_multixact_members",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_show_all_file_settings",
        "pg_jit_available",
        "pg_partition_ancestors",
        "pg_partition_tree",
        "pg_sequence_last_value",
        "pg_stat_have_stats",
        "pg_stat_get_recovery_prefetch",
        "pg_stat_get_xact_blocks_fetched",
        "pg_stat_get_xact_blocks_hit",
        "pg_stat_get_xact_function_calls",
        "pg_stat_get_xact_function_self_time",
        "pg_stat_get_xact_function_total_time",
        "pg_stat_get_xact_numscans",
        "pg_stat_get_xact_tuples_deleted",
        "pg_stat_get_xact_tuples_fetched",
        "pg_stat_get_xact_tuples_hot_updated",
        "pg_stat_get_xact_tuples_inserted",
        "pg_stat_get_xact_tuples_returned",
        "pg_stat_get_xact_tuples_updated",
        "pg_show_replication_origin_status",
        "pg_replication_origin_progress",
        "pg_replication_origin_session_is_setup",
        "pg_replication_origin_session_progress",
        "pg_collation_actual_version",
        "pg_database_collation_actual_version",
        "pg_export_snapshot",
        "pg_logical_slot_peek_changes",
        "pg_logical_slot_peek_binary_changes",
        "lo_get",
        "loread",
        "lo_open",
        "lo_close",
        "lo_lseek",
        "lo_lseek64",
        "lo_tell",
        "lo_tell64",
        "pg_read_file",
        "pg_read_file_old",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_ls_dir",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_archive_statusdir",
        "pg_ls_tmpdir",
        "pg_ls_logicalmapdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_replslotdir",
    ]
)

# Volatile built-ins (and well-known extension functions) with effects, by what they do.
EFFECTS: dict[str, tuple[Verb, tuple[str, ...]]] = {
    "lo_unlink": (Verb.DELETE, ("large-object",)),
    "lo_truncate": (Verb.DELETE, ("large-object",)),
    "lo_truncate64": (Verb.DELETE, ("large-object",)),
    "lo_export": (Verb.DESTROY, ("server-file",)),  # writes any file the server can
    "lo_import": (Verb.CREATE, ("server-file", "large-object")),
    "lo_creat": (Verb.CREATE, ("large-object",)),
    "lo_create": (Verb.CREATE, ("large-object",)),
    "lo_from_bytea": (Verb.CREATE, ("large-object",)),
    "lo_put": (Verb.UPDATE, ("large-object",)),
    "lowrite": (Verb.UPDATE, ("large-object",)),
    "pg_file_write": (Verb.DESTROY, ("server-file",)),  # adminpack
    "pg_file_unlink": (Verb.DESTROY, ("server-file",)),
    "pg_file_rename": (Verb.DESTROY, ("server-file",)),
    "pg_terminate_backend": (Verb.EXECUTE, ("terminate",)),
    "pg_cancel_backend": (Verb.EXECUTE, ("terminate",)),
    "pg_promote": (Verb.EXECUTE, ("promote",)),
    "pg_drop_replication_slot": (Verb.DELETE, ("replication",)),
    "pg_replication_origin_drop": (Verb.DELETE, ("replication",)),
    "pg_logical_slot_get_changes": (Verb.DELETE, ("replication",)),  # consumes them
    "pg_logical_slot_get_binary_changes": (Verb.DELETE, ("replication",)),
    "pg_create_logical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_create_physical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_copy_logical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_copy_physical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_replication_origin_create": (Verb.CREATE, ("replication",)),
    "pg_replication_slot_advance": (Verb.UPDATE, ("replication",)),
    "pg_replication_origin_advance": (Verb.UPDATE, ("replication",)),
    "pg_stat_reset": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_shared": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_single_table_counters": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_single_function_counters": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_slru": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_replication_slot": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_subscription_stats": (Verb.UPDATE, ("statistics-reset",)),
    "nextval": (Verb.UPDATE, ("sequence",)),
    "setval": (Verb.UPDATE, ("sequence",)),
    "pg_reload_conf": (Verb.UPDATE, ("server-config",)),
    "pg_rotate_logfile": (Verb.UPDATE, ()),
    "pg_switch_wal": (Verb.UPDATE, ()),
    "pg_create_restore_point": (Verb.UPDATE, ()),
    "pg_notify": (Verb.UPDATE, ()),
    "pg_wal_replay_pause": (Verb.UPDATE, ("replication",)),
    "pg_wal_replay_resume": (Verb.UPDATE, ("replication",)),
    "pg_backup_start": (Verb.UPDATE, ()),
    "pg_backup_stop": (Verb.UPDATE, ()),
}

# Functions that run SQL text given as an argument (the index of that argument; dblink's
# depends on its optional arguments, see _sql_argument): the text is read like the request.
SQL_ARGUMENT: dict[str, int] = {
    "dblink": -1,  # dblink([conn,] sql [, fail_on_error]): see _sql_argument
    "dblink_exec": -1,
    "dblink_send_query": -1,
    "dblink_open": -1,
    "query_to_xml": 0,
    "query_to_xmlschema": 0,
    "query_to_xml_and_xmlschema": 0,
    "ts_stat": 0,
    "ts_rewrite": 1,
}
DBLINK = frozenset({"dblink", "dblink_exec", "dblink_send_query", "dblink_open"})

DML = frozenset({"DeleteStmt", "UpdateStmt", "InsertStmt", "MergeStmt"})
NESTED = DML | {"FuncCall"}

# Statements that define code for later without running any of it now: their bodies are
# not walked (what they arm is judged when it is called, or, for a rule, see RuleStmt).
DEFINITIONS = frozenset(
    {
        "CreateFunctionStmt",
        "ViewStmt",
        "CreateTrigStmt",
        "CreatePolicyStmt",
        "AlterPolicyStmt",
        "CreateStmt",
        "CreateDomainStmt",
        "PrepareStmt",
        "ExplainStmt",
        "CreateSchemaStmt",
        "RuleStmt",
        "ExecuteStmt",
    }
)

DROP_DESTROYS = frozenset({"OBJECT_TABLE", "OBJECT_SCHEMA", "OBJECT_MATVIEW"})
DROP_PERMISSION = frozenset({"OBJECT_POLICY", "OBJECT_ROLE", "OBJECT_USER_MAPPING"})
OBJECT_WORDS = {
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_EVENT_TRIGGER": "EVENT TRIGGER",
    "OBJECT_ACCESS_METHOD": "ACCESS METHOD",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
}
PERMISSION_STATEMENTS = frozenset(
    {
        "GrantRoleStmt",
        "CreateRoleStmt",
        "AlterRoleStmt",
        "AlterRoleSetStmt",
        "DropRoleStmt",
        "AlterDefaultPrivilegesStmt",
        "AlterOwnerStmt",
        "CreatePolicyStmt",
        "AlterPolicyStmt",
        "CreateUserMappingStmt",
        "AlterUserMappingStmt",
        "DropUserMappingStmt",
        "ReassignOwnedStmt",
        "SecLabelStmt",
    }
)
READ_STATEMENTS = frozenset(
    {
        "VariableShowStmt",
        "DiscardStmt",
        "ListenStmt",
        "UnlistenStmt",
        "FetchStmt",
        "ClosePortalStmt",
        "DeallocateStmt",
        "ConstraintsSetStmt",
    }
)
UPDATE_STATEMENTS = frozenset(
    {
        "VacuumStmt",
        "ClusterStmt",
        "ReindexStmt",
        "RefreshMatViewStmt",
        "CommentStmt",
        "CheckPointStmt",
        "NotifyStmt",
        "LockStmt",
        "AlterObjectSchemaStmt",
        "AlterSeqStmt",
    }
)
