//! Keywords the classifier looks at, and what it knows about functions.
//!
//! Lookups are hash tables built at compile time from the lists below, so a word costs one hash
//! and usually one comparison. The lists are kept lowercase and sorted for the reader (a unit
//! test checks).

/// Declares [`Kw`] and the list of keywords. A keyword is matched as one integer, its lowercase
/// bytes packed into a u128, looked up in a hash table built at compile time: one hash and
/// usually one comparison per word (a `match` on byte slices calls memcmp once per arm).
macro_rules! keywords {
    ($($name:ident = $text:literal,)*) => {
        /// The words the classifier dispatches on or looks for. Anything else is just a word.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Kw {
            $($name,)*
        }

        /// Every keyword, packed (see [`pack`]), with its [`Kw`].
        const KEYWORDS: &[(u128, Kw)] = &[$((pack($text), Kw::$name),)*];
        };
}

keywords! {
    Abort = b"abort", All = b"all", Analyse = b"analyse", Analyze = b"analyze", And = b"and", As = b"as",
    Authorization = b"authorization", Begin = b"begin", Binary = b"binary", Case = b"case", Chain = b"chain",
    Characteristics = b"characteristics", Close = b"close", Commit = b"commit", Constraints = b"constraints",
    Copy = b"copy", Create = b"create", Cursor = b"cursor", Cycle = b"cycle", Deallocate = b"deallocate",
    Declare = b"declare", Default = b"default", Delete = b"delete", Discard = b"discard", End = b"end",
    Execute = b"execute", Explain = b"explain", Fetch = b"fetch", For = b"for", From = b"from",
    Function = b"function", Hold = b"hold", Insert = b"insert", Into = b"into", Key = b"key",
    Listen = b"listen", Load = b"load", Local = b"local", Materialized = b"materialized", Merge = b"merge",
    Move = b"move", No = b"no", Not = b"not", Only = b"only", Or = b"or", Prepare = b"prepare",
    Prepared = b"prepared", Procedure = b"procedure", Read = b"read", Recursive = b"recursive",
    Release = b"release", Replace = b"replace", Reset = b"reset", Rollback = b"rollback",
    Savepoint = b"savepoint", Search = b"search", Select = b"select", Serializable = b"serializable",
    Session = b"session", Set = b"set", Share = b"share", Show = b"show", Snapshot = b"snapshot",
    Start = b"start", Stdout = b"stdout", Table = b"table", To = b"to", Transaction = b"transaction",
    Unlisten = b"unlisten", Update = b"update", Using = b"using", Values = b"values", Verbose = b"verbose",
    With = b"with", Without = b"without", Work = b"work", Write = b"write",
}

/// Slots of the keyword table: a power of two, several times the number of keywords.
const KEYWORD_SLOTS: usize = 512;

/// The keyword table: packed keyword (0 = empty slot) and its Kw, by linear probing.
static KEYWORD_TABLE: ([u128; KEYWORD_SLOTS], [Option<Kw>; KEYWORD_SLOTS]) = {
    let mut keys = [0u128; KEYWORD_SLOTS];
    let mut kws = [None; KEYWORD_SLOTS];
    let mut i = 0;
    while i < KEYWORDS.len() {
        let (key, kw) = KEYWORDS[i];
        let mut slot = keyword_slot(key);
        while keys[slot] != 0 {
            slot = (slot + 1) % KEYWORD_SLOTS;
        }
        keys[slot] = key;
        kws[slot] = Some(kw);
        i += 1;
    }
    (keys, kws)
};

const fn keyword_slot(key: u128) -> usize {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % KEYWORD_SLOTS
}

/// The keyword an unquoted word spells, ignoring ASCII case.
pub(crate) fn keyword(word: &[u8]) -> Option<Kw> {
    let key = pack_folded(word)?;
    let (keys, kws) = &KEYWORD_TABLE;
    let mut slot = keyword_slot(key);
    // The table is mostly empty, so an empty slot (key 0) always ends the probe.
    loop {
        let k = *keys.get(slot)?;
        if k == key {
            return *kws.get(slot)?;
        }
        if k == 0 {
            return None;
        }
        slot = (slot + 1) % KEYWORD_SLOTS;
    }
}

/// A keyword's bytes, little-endian in a u128 (all keywords are at most 16 bytes).
const fn pack(text: &[u8]) -> u128 {
    let mut v = 0u128;
    let mut i = 0;
    while i < text.len() {
        v |= (text[i] as u128) << (8 * i);
        i += 1;
    }
    v
}

/// A word packed like [`pack`] with ASCII letters lowercased, or None if too long to be a
/// keyword. `| 0x20` lowercases letters; it maps no other byte of a word (digits, `_`, `$`,
/// bytes >= 0x80) onto a lowercase letter, so no non-keyword can come out equal to a keyword.
fn pack_folded(word: &[u8]) -> Option<u128> {
    if word.is_empty() || word.len() > 16 {
        return None;
    }
    // Built in two registers: copying into a buffer and loading it back stalls the CPU.
    let (mut lo, mut hi) = (0u64, 0u64);
    for (i, &b) in word.iter().enumerate() {
        let b = u64::from(b | 0x20);
        if i < 8 {
            lo |= b << (8 * i);
        } else {
            hi |= b << (8 * (i - 8));
        }
    }
    Some(u128::from(lo) | (u128::from(hi) << 64))
}

/// What calling a function by this name means for routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FunctionKind {
    /// Writes, takes locks or depends on session state that lives on the primary
    /// (nextval, pg_advisory_lock, currval, ...): the statement must run on the primary.
    Writes,
    /// Not a call: an SQL construct or a type name written like one (`IN (`, `numeric(10,2)`).
    NotAFunction,
    /// A built-in known not to write.
    ReadOnly,
    /// Anything else: may write. The statement may still try a replica (a write there fails with
    /// SQLSTATE 25006 and is retried on the primary), but the router should know.
    Unknown,
}

/// NAMEDATALEN - 1: no PostgreSQL name is longer.
const MAX_NAME_LEN: usize = 63;

/// Classifies a call of `name` (the last part of a possibly qualified name).
/// `folded`: the name was unquoted, so case does not matter and SQL constructs apply.
/// `builtin_scope`: unqualified or `pg_catalog.`-qualified, so a built-in of that name is meant.
pub(crate) fn function_kind(name: &[u8], folded: bool, builtin_scope: bool) -> FunctionKind {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return FunctionKind::Unknown;
    }
    let mut buf = [0u8; MAX_NAME_LEN];
    for (d, s) in buf.iter_mut().zip(name) {
        *d = if folded { s.to_ascii_lowercase() } else { *s };
    }
    let name = &buf[..name.len()];
    let flags = function_flags(name);
    // Checked whatever the qualifier: a same-named function elsewhere gets the benefit of no doubt.
    if flags & WRITES != 0 || ((name.starts_with(b"pg_") || name.starts_with(b"db")) && has_writing_prefix(name)) {
        return FunctionKind::Writes;
    }
    if folded && builtin_scope && flags & CONSTRUCT != 0 {
        return FunctionKind::NotAFunction;
    }
    if builtin_scope && flags & READ_ONLY != 0 {
        return FunctionKind::ReadOnly;
    }
    FunctionKind::Unknown
}

fn has_writing_prefix(name: &[u8]) -> bool {
    WRITING_FUNCTION_PREFIXES.iter().any(|p| name.starts_with(p))
}

// Flags of a name in the function table.
const WRITES: u8 = 1;
const CONSTRUCT: u8 = 2;
const READ_ONLY: u8 = 4;

/// Slots of the function-name table: a power of two, about twice the number of names.
const NAME_SLOTS: usize = 2048;

/// The three name lists merged into one hash table (linear probing), built at compile time.
static NAME_TABLE: ([&[u8]; NAME_SLOTS], [u8; NAME_SLOTS]) = {
    let mut names: [&[u8]; NAME_SLOTS] = [b""; NAME_SLOTS];
    let mut flags = [0u8; NAME_SLOTS];
    let lists: [(&[&[u8]], u8); 3] = [
        (WRITING_FUNCTIONS, WRITES),
        (NON_FUNCTION_KEYWORDS, CONSTRUCT),
        (READ_ONLY_FUNCTIONS, READ_ONLY),
    ];
    let mut l = 0;
    while l < lists.len() {
        let (list, flag) = lists[l];
        let mut i = 0;
        while i < list.len() {
            let name = list[i];
            let mut slot = name_slot(name);
            while !names[slot].is_empty() && !const_eq(names[slot], name) {
                slot = (slot + 1) % NAME_SLOTS;
            }
            names[slot] = name;
            flags[slot] |= flag;
            i += 1;
        }
        l += 1;
    }
    (names, flags)
};

/// FNV-1a.
const fn name_slot(name: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < name.len() {
        h = (h ^ name[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    (h >> 32) as usize % NAME_SLOTS
}

const fn const_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The flags of a (lowercased) name, 0 if it is on no list.
fn function_flags(name: &[u8]) -> u8 {
    let (names, flags) = &NAME_TABLE;
    let mut slot = name_slot(name);
    loop {
        let Some(&candidate) = names.get(slot) else { return 0 };
        if candidate.is_empty() {
            return 0;
        }
        if candidate == name {
            return flags.get(slot).copied().unwrap_or(0);
        }
        slot = (slot + 1) % NAME_SLOTS;
    }
}

/// Built-in functions that never write and behave the same on a replica. Generous but not
/// exhaustive: a function missing here only sets `calls_functions`.
pub(crate) const READ_ONLY_FUNCTIONS: &[&[u8]] = &[
    b"abbrev",
    b"abs",
    b"acos",
    b"age",
    b"any_value",
    b"area",
    b"array_agg",
    b"array_append",
    b"array_cat",
    b"array_dims",
    b"array_fill",
    b"array_length",
    b"array_lower",
    b"array_ndims",
    b"array_position",
    b"array_positions",
    b"array_prepend",
    b"array_remove",
    b"array_replace",
    b"array_reverse",
    b"array_sample",
    b"array_shuffle",
    b"array_sort",
    b"array_to_json",
    b"array_to_string",
    b"array_to_tsvector",
    b"array_upper",
    b"ascii",
    b"asin",
    b"atan",
    b"atan2",
    b"avg",
    b"bit_and",
    b"bit_count",
    b"bit_length",
    b"bit_or",
    b"bit_xor",
    b"bool",
    b"bool_and",
    b"bool_or",
    b"box",
    b"broadcast",
    b"btrim",
    b"bytea",
    b"cardinality",
    b"casefold",
    b"cbrt",
    b"ceil",
    b"ceiling",
    b"center",
    b"char_length",
    b"character_length",
    b"chr",
    b"cidr",
    b"circle",
    b"clock_timestamp",
    b"coalesce",
    b"col_description",
    b"concat",
    b"concat_ws",
    b"convert",
    b"convert_from",
    b"convert_to",
    b"corr",
    b"cos",
    b"cosh",
    b"count",
    b"covar_pop",
    b"covar_samp",
    b"crc32",
    b"crc32c",
    b"cume_dist",
    b"current_database",
    b"current_date",
    b"current_schema",
    b"current_schemas",
    b"current_setting",
    b"current_time",
    b"current_timestamp",
    b"date",
    b"date_add",
    b"date_bin",
    b"date_part",
    b"date_subtract",
    b"date_trunc",
    b"daterange",
    b"decode",
    b"degrees",
    b"dense_rank",
    b"div",
    b"encode",
    b"every",
    b"exp",
    b"extract",
    b"factorial",
    b"family",
    b"first_value",
    b"float4",
    b"float8",
    b"floor",
    b"format",
    b"format_type",
    b"gcd",
    b"gen_random_uuid",
    b"generate_series",
    b"generate_subscripts",
    b"get_bit",
    b"get_byte",
    b"greatest",
    b"grouping",
    b"has_any_column_privilege",
    b"has_column_privilege",
    b"has_database_privilege",
    b"has_foreign_data_wrapper_privilege",
    b"has_function_privilege",
    b"has_language_privilege",
    b"has_largeobject_privilege",
    b"has_parameter_privilege",
    b"has_schema_privilege",
    b"has_sequence_privilege",
    b"has_server_privilege",
    b"has_table_privilege",
    b"has_tablespace_privilege",
    b"has_type_privilege",
    b"height",
    b"host",
    b"hostmask",
    b"inet",
    b"inet_client_addr",
    b"inet_client_port",
    b"inet_merge",
    b"inet_same_family",
    b"inet_server_addr",
    b"inet_server_port",
    b"initcap",
    b"int2",
    b"int4",
    b"int4range",
    b"int8",
    b"int8range",
    b"interval",
    b"isempty",
    b"isfinite",
    b"json",
    b"json_agg",
    b"json_agg_strict",
    b"json_array",
    b"json_array_elements",
    b"json_array_elements_text",
    b"json_array_length",
    b"json_arrayagg",
    b"json_build_array",
    b"json_build_object",
    b"json_each",
    b"json_each_text",
    b"json_exists",
    b"json_extract_path",
    b"json_extract_path_text",
    b"json_object",
    b"json_object_agg",
    b"json_object_agg_strict",
    b"json_object_agg_unique",
    b"json_object_agg_unique_strict",
    b"json_object_keys",
    b"json_objectagg",
    b"json_populate_record",
    b"json_populate_recordset",
    b"json_query",
    b"json_scalar",
    b"json_serialize",
    b"json_strip_nulls",
    b"json_table",
    b"json_to_record",
    b"json_to_recordset",
    b"json_typeof",
    b"json_value",
    b"jsonb",
    b"jsonb_agg",
    b"jsonb_agg_strict",
    b"jsonb_array_elements",
    b"jsonb_array_elements_text",
    b"jsonb_array_length",
    b"jsonb_build_array",
    b"jsonb_build_object",
    b"jsonb_each",
    b"jsonb_each_text",
    b"jsonb_extract_path",
    b"jsonb_extract_path_text",
    b"jsonb_insert",
    b"jsonb_object",
    b"jsonb_object_agg",
    b"jsonb_object_agg_strict",
    b"jsonb_object_agg_unique",
    b"jsonb_object_agg_unique_strict",
    b"jsonb_object_keys",
    b"jsonb_path_exists",
    b"jsonb_path_exists_tz",
    b"jsonb_path_match",
    b"jsonb_path_match_tz",
    b"jsonb_path_query",
    b"jsonb_path_query_array",
    b"jsonb_path_query_array_tz",
    b"jsonb_path_query_first",
    b"jsonb_path_query_first_tz",
    b"jsonb_path_query_tz",
    b"jsonb_populate_record",
    b"jsonb_populate_record_valid",
    b"jsonb_populate_recordset",
    b"jsonb_pretty",
    b"jsonb_set",
    b"jsonb_set_lax",
    b"jsonb_strip_nulls",
    b"jsonb_to_record",
    b"jsonb_to_recordset",
    b"jsonb_typeof",
    b"justify_days",
    b"justify_hours",
    b"justify_interval",
    b"lag",
    b"last_value",
    b"lcm",
    b"lead",
    b"least",
    b"left",
    b"length",
    b"line",
    b"ln",
    b"lo_get",
    b"localtime",
    b"localtimestamp",
    b"log",
    b"log10",
    b"lower",
    b"lower_inc",
    b"lower_inf",
    b"lpad",
    b"lseg",
    b"ltrim",
    b"make_date",
    b"make_interval",
    b"make_time",
    b"make_timestamp",
    b"make_timestamptz",
    b"masklen",
    b"max",
    b"md5",
    b"merge_action",
    b"min",
    b"min_scale",
    b"mod",
    b"mode",
    b"netmask",
    b"network",
    b"normalize",
    b"now",
    b"npoints",
    b"nth_value",
    b"ntile",
    b"nullif",
    b"num_nonnulls",
    b"num_nulls",
    b"numeric",
    b"numnode",
    b"numrange",
    b"obj_description",
    b"octet_length",
    b"oid",
    b"overlay",
    b"parse_ident",
    b"path",
    b"percent_rank",
    b"percentile_cont",
    b"percentile_disc",
    b"pg_backend_pid",
    b"pg_blocking_pids",
    b"pg_client_encoding",
    b"pg_column_compression",
    b"pg_column_size",
    b"pg_conf_load_time",
    b"pg_current_snapshot",
    b"pg_database_size",
    b"pg_encoding_to_char",
    b"pg_function_is_visible",
    b"pg_get_constraintdef",
    b"pg_get_expr",
    b"pg_get_function_arguments",
    b"pg_get_function_identity_arguments",
    b"pg_get_function_result",
    b"pg_get_functiondef",
    b"pg_get_indexdef",
    b"pg_get_keywords",
    b"pg_get_partkeydef",
    b"pg_get_ruledef",
    b"pg_get_serial_sequence",
    b"pg_get_statisticsobjdef",
    b"pg_get_triggerdef",
    b"pg_get_userbyid",
    b"pg_get_viewdef",
    b"pg_get_wal_replay_pause_state",
    b"pg_has_role",
    b"pg_indexes_size",
    b"pg_is_in_recovery",
    b"pg_is_wal_replay_paused",
    b"pg_jit_available",
    b"pg_last_wal_receive_lsn",
    b"pg_last_wal_replay_lsn",
    b"pg_last_xact_replay_timestamp",
    b"pg_listening_channels",
    b"pg_notification_queue_usage",
    b"pg_postmaster_start_time",
    b"pg_relation_filenode",
    b"pg_relation_filepath",
    b"pg_relation_size",
    b"pg_size_bytes",
    b"pg_size_pretty",
    b"pg_sleep",
    b"pg_sleep_for",
    b"pg_sleep_until",
    b"pg_snapshot_xmax",
    b"pg_snapshot_xmin",
    b"pg_table_is_visible",
    b"pg_table_size",
    b"pg_tablespace_size",
    b"pg_total_relation_size",
    b"pg_trigger_depth",
    b"pg_type_is_visible",
    b"pg_typeof",
    b"pg_visible_in_snapshot",
    b"pg_wal_lsn_diff",
    b"pg_xact_commit_timestamp",
    b"phraseto_tsquery",
    b"pi",
    b"plainto_tsquery",
    b"point",
    b"polygon",
    b"position",
    b"pow",
    b"power",
    b"querytree",
    b"quote_ident",
    b"quote_literal",
    b"quote_nullable",
    b"radians",
    b"random",
    b"random_normal",
    b"range_agg",
    b"range_intersect_agg",
    b"range_merge",
    b"rank",
    b"regclass",
    b"regexp_count",
    b"regexp_instr",
    b"regexp_like",
    b"regexp_match",
    b"regexp_matches",
    b"regexp_replace",
    b"regexp_split_to_array",
    b"regexp_split_to_table",
    b"regexp_substr",
    b"regr_avgx",
    b"regr_avgy",
    b"regr_count",
    b"regr_intercept",
    b"regr_r2",
    b"regr_slope",
    b"regr_sxx",
    b"regr_sxy",
    b"regr_syy",
    b"repeat",
    b"replace",
    b"reverse",
    b"right",
    b"round",
    b"row_number",
    b"row_to_json",
    b"rpad",
    b"rtrim",
    b"scale",
    b"set_bit",
    b"set_byte",
    b"set_masklen",
    b"setweight",
    b"sha224",
    b"sha256",
    b"sha384",
    b"sha512",
    b"shobj_description",
    b"sign",
    b"sin",
    b"sinh",
    b"split_part",
    b"sqrt",
    b"starts_with",
    b"statement_timestamp",
    b"stddev",
    b"stddev_pop",
    b"stddev_samp",
    b"string_agg",
    b"string_to_array",
    b"string_to_table",
    b"strip",
    b"strpos",
    b"substr",
    b"substring",
    b"sum",
    b"tan",
    b"tanh",
    b"text",
    b"timeofday",
    b"timestamp",
    b"timestamptz",
    b"timezone",
    b"to_bin",
    b"to_char",
    b"to_date",
    b"to_hex",
    b"to_json",
    b"to_jsonb",
    b"to_number",
    b"to_oct",
    b"to_regclass",
    b"to_regnamespace",
    b"to_regoper",
    b"to_regproc",
    b"to_regprocedure",
    b"to_regrole",
    b"to_regtype",
    b"to_regtypemod",
    b"to_timestamp",
    b"to_tsquery",
    b"to_tsvector",
    b"transaction_timestamp",
    b"translate",
    b"trim",
    b"trim_array",
    b"trim_scale",
    b"trunc",
    b"ts_headline",
    b"ts_rank",
    b"ts_rank_cd",
    b"tsrange",
    b"tstzrange",
    b"tsvector_to_array",
    b"txid_current_snapshot",
    b"txid_snapshot_xmax",
    b"txid_snapshot_xmin",
    b"txid_visible_in_snapshot",
    b"unistr",
    b"unnest",
    b"upper",
    b"upper_inc",
    b"upper_inf",
    b"uuid",
    b"uuid_extract_timestamp",
    b"uuid_extract_version",
    b"uuidv4",
    b"uuidv7",
    b"var_pop",
    b"var_samp",
    b"varchar",
    b"variance",
    b"version",
    b"websearch_to_tsquery",
    b"width",
    b"width_bucket",
    b"xml_is_well_formed",
    b"xmlagg",
    b"xmlattributes",
    b"xmlconcat",
    b"xmlelement",
    b"xmlexists",
    b"xmlforest",
    b"xmlparse",
    b"xmlpi",
    b"xmlroot",
    b"xmlserialize",
    b"xmltable",
    b"xpath",
    b"xpath_exists",
];

/// Functions that must run on the primary: they write (nextval, setval, lo_*), take locks that
/// must be the primary's (advisory locks), read session state created on the primary (currval,
/// lastval), or fail on a replica (txid_current, pg_current_wal_lsn, pg_switch_wal).
pub(crate) const WRITING_FUNCTIONS: &[&[u8]] = &[
    b"brin_desummarize_range",
    b"brin_summarize_new_values",
    b"brin_summarize_range",
    b"currval",
    b"gin_clean_pending_list",
    b"lastval",
    b"lo_creat",
    b"lo_create",
    b"lo_export",
    b"lo_from_bytea",
    b"lo_import",
    b"lo_open",
    b"lo_put",
    b"lo_truncate",
    b"lo_truncate64",
    b"lo_unlink",
    b"lowrite",
    b"nextval",
    b"pg_backup_start",
    b"pg_backup_stop",
    b"pg_cancel_backend",
    b"pg_current_xact_id",
    b"pg_current_xact_id_if_assigned",
    b"pg_export_snapshot",
    b"pg_import_system_collations",
    b"pg_log_backend_memory_contexts",
    b"pg_log_standby_snapshot",
    b"pg_notify",
    b"pg_promote",
    b"pg_reload_conf",
    b"pg_replication_slot_advance",
    b"pg_rotate_logfile",
    b"pg_start_backup",
    b"pg_stat_statements_reset",
    b"pg_stop_backup",
    b"pg_switch_wal",
    b"pg_switch_xlog",
    b"pg_sync_replication_slots",
    b"pg_terminate_backend",
    b"pg_truncate_visibility_map",
    b"pg_wal_replay_pause",
    b"pg_wal_replay_resume",
    b"set_config",
    b"setval",
    b"txid_current",
    b"txid_current_if_assigned",
];

/// Families of writing functions: pg_advisory_*, pg_try_advisory_*, pg_create_*_slot and
/// restore points, pg_drop_*, pg_copy_*_slot, pg_current_wal_*, pg_logical_*,
/// pg_replication_origin_*, pg_stat_reset*, pg_walfile_name*, dblink*.
pub(crate) const WRITING_FUNCTION_PREFIXES: &[&[u8]] = &[
    b"dblink",
    b"pg_advisory_",
    b"pg_copy_",
    b"pg_create_",
    b"pg_current_wal_",
    b"pg_drop_",
    b"pg_logical_",
    b"pg_replication_origin_",
    b"pg_stat_reset",
    b"pg_try_advisory_",
    b"pg_walfile_name",
];

/// Words that may stand before `(` without being a function call: SQL constructs (`IN (`,
/// `OVER (`, `FILTER (`), special forms the grammar handles itself (`CAST(`, `EXTRACT(`,
/// `COALESCE(`) and type names with modifiers (`numeric(10,2)`, `character varying(3)`).
pub(crate) const NON_FUNCTION_KEYWORDS: &[&[u8]] = &[
    b"all",
    b"and",
    b"any",
    b"array",
    b"as",
    b"bernoulli",
    b"between",
    b"bigint",
    b"bit",
    b"boolean",
    b"by",
    b"case",
    b"cast",
    b"char",
    b"character",
    b"coalesce",
    b"collate",
    b"columns",
    b"conflict",
    b"cube",
    b"current_time",
    b"current_timestamp",
    b"day",
    b"dec",
    b"decimal",
    b"distinct",
    b"else",
    b"escape",
    b"except",
    b"exists",
    b"extract",
    b"filter",
    b"float",
    b"for",
    b"from",
    b"greatest",
    b"group",
    b"groups",
    b"having",
    b"hour",
    b"ilike",
    b"in",
    b"int",
    b"integer",
    b"intersect",
    b"interval",
    b"into",
    b"is",
    b"join",
    b"lateral",
    b"least",
    b"like",
    b"limit",
    b"localtime",
    b"localtimestamp",
    b"materialized",
    b"minute",
    b"month",
    b"national",
    b"nchar",
    b"nested",
    b"normalize",
    b"not",
    b"nullif",
    b"numeric",
    b"offset",
    b"on",
    b"only",
    b"operator",
    b"or",
    b"order",
    b"over",
    b"overlay",
    b"partition",
    b"passing",
    b"path",
    b"position",
    b"precision",
    b"range",
    b"real",
    b"recursive",
    b"repeatable",
    b"returning",
    b"rollup",
    b"row",
    b"rows",
    b"second",
    b"select",
    b"sets",
    b"similar",
    b"smallint",
    b"some",
    b"substring",
    b"symmetric",
    b"system",
    b"table",
    b"tablesample",
    b"then",
    b"time",
    b"timestamp",
    b"to",
    b"treat",
    b"trim",
    b"union",
    b"using",
    b"values",
    b"varchar",
    b"variadic",
    b"varying",
    b"when",
    b"where",
    b"window",
    b"with",
    b"within",
    b"xmlnamespaces",
    b"year",
    b"zone",
];
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_lowercase_and_disjoint() {
        for list in [
            READ_ONLY_FUNCTIONS,
            WRITING_FUNCTIONS,
            WRITING_FUNCTION_PREFIXES,
            NON_FUNCTION_KEYWORDS,
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "unsorted list");
            assert!(list.iter().all(|n| !n.iter().any(u8::is_ascii_uppercase)));
        }
        for name in READ_ONLY_FUNCTIONS {
            assert_eq!(
                function_kind(name, false, true),
                FunctionKind::ReadOnly,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        for name in WRITING_FUNCTIONS {
            assert_eq!(
                function_kind(name, true, false),
                FunctionKind::Writes,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        for name in NON_FUNCTION_KEYWORDS {
            assert_eq!(
                function_kind(name, true, true),
                FunctionKind::NotAFunction,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn every_keyword_is_found() {
        for &(key, kw) in KEYWORDS {
            let text = key.to_le_bytes();
            let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(16)];
            assert_eq!(keyword(text), Some(kw));
            assert_eq!(keyword(&text.to_ascii_uppercase()), Some(kw));
        }
    }

    #[test]
    fn keywords_ignore_case() {
        assert_eq!(keyword(b"SeLeCt"), Some(Kw::Select));
        assert_eq!(keyword(b"characteristics"), Some(Kw::Characteristics));
        assert_eq!(keyword(b"selects"), None);
        assert_eq!(keyword(b"update_count"), None);
    }

    #[test]
    fn function_kinds() {
        assert_eq!(function_kind(b"NEXTVAL", true, true), FunctionKind::Writes);
        assert_eq!(
            function_kind(b"pg_advisory_xact_lock_shared", true, false),
            FunctionKind::Writes
        );
        assert_eq!(function_kind(b"count", true, true), FunctionKind::ReadOnly);
        assert_eq!(function_kind(b"count", true, false), FunctionKind::Unknown);
        assert_eq!(function_kind(b"COUNT", false, true), FunctionKind::Unknown);
        assert_eq!(function_kind(b"in", true, true), FunctionKind::NotAFunction);
        assert_eq!(function_kind(b"my_func", true, true), FunctionKind::Unknown);
    }
}
