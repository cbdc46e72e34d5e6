use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// drvault: encrypted, deduplicating backups with point-in-time restore.
#[derive(Debug, Parser)]
#[command(name = "drvault", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Repository path or URL [default: the embedded local repository, /var/lib/drvault/repo for
    /// root, else $XDG_DATA_HOME/drvault/repo]
    #[arg(
        short = 'r',
        long,
        global = true,
        help_heading = "Global options",
        env = "DRVAULT_REPO",
        value_name = "PATH_OR_URL"
    )]
    pub repo: Option<String>,
    /// Configuration file naming the repository's targets [default: /etc/drvault/drvault.toml for
    /// root, else $XDG_CONFIG_HOME/drvault/drvault.toml, when it exists]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "DRVAULT_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Read the passphrase from this file (its first line; for a key-file slot, all of it).
    /// Also: $DRVAULT_PASSWORD, a systemd credential named drvault-password, or a prompt.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Local state (catalog cache) [default: /var/lib/drvault for root, else $XDG_STATE_HOME/drvault]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "DRVAULT_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// Log lines on stderr as text (journald-friendly: no colours or timestamps under systemd)
    /// or as one JSON object per line.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "DRVAULT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the entries of a snapshot.
    Ls(LsArgs),
    /// Write a file of a snapshot to standard output, or a directory as a tar stream.
    Dump(DumpArgs),
    /// Mount the snapshots read-only (FUSE) at MOUNTPOINT until Ctrl-C, SIGTERM or `umount`.
    Mount(MountArgs),
    /// What changed between two snapshots: added, removed, changed content, changed metadata.
    Diff(DiffArgs),
    /// Find entries by name or path pattern across snapshots: where and when each one was.
    Find(FindArgs),
    /// Change the tags of snapshots (each gets a new ID; recorded in the audit log).
    Tag(TagArgs),
    /// Sizes: of a snapshot (restored, and stored after deduplication and compression), or of
    /// the whole repository.
    Stats(StatsArgs),
    /// Restore a snapshot (or part of it) into a directory.
    Restore(RestoreArgs),
    /// Verify the repository's structure and, optionally, its data.
    Check(CheckArgs),
    /// Manage key slots.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show each storage target: reachability, latency, objects, bytes, and what it owes.
    Targets,
    /// Copy to every target the objects it lacks, from targets holding intact copies.
    Sync,
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for drvault, drtest and every subcommand into a directory.
    Man {
        /// Directory to write the pages into (created when missing), e.g.
        /// /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Remove snapshots a retention policy does not keep (their data goes with `prune`).
    Forget(ForgetArgs),
    /// Delete the data no snapshot uses: marks it, and deletes it in a later run (after
    /// --grace) once no backup that began before the mark is still running.
    Prune(PruneArgs),
    /// Run the configured [[jobs]] on their schedules (the systemd service; docs/OPERATIONS.md).
    Agent(AgentArgs),
    /// The agent's job history, with the success rate per job.
    Jobs(JobsArgs),
    /// The hash-chained audit log of key operations and drills.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Read every copy on every target, replace damaged copies from intact ones, and copy
    /// missing ones; needs no passphrase.
    Repair,
    /// Upgrade the repository to format version 2 (host keys), in place and resumably; a
    /// repository that needs nothing is left as it is.
    Migrate,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Validate the configuration, print each job's next three runs, and exit.
    #[arg(long)]
    pub print_schedule: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only runs started within this period before now (e.g. 30d, 90d) [default: all].
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete marked packs once their mark is this old (e.g. 30m, 1h, 1d). With 0s, one run
    /// marks and deletes when no backup is running.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
    /// Repack a pack whose unused bytes exceed this fraction of its size (0 to 1): its used
    /// blobs are copied into new packs and the pack is marked.
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    pub repack_threshold: f64,
    /// Show what would be marked, repacked and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Remove exactly these snapshots (IDs or unique prefixes) instead of applying rules.
    #[arg(value_name = "SNAPSHOT_ID")]
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots of each group.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// ... days (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// ... ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// ... months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// ... years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
    /// Keep every snapshot taken within this duration before the group's newest (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Never remove snapshots with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Show what would be removed and which rule keeps each survivor; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a policy that keeps no snapshot of a group (refused otherwise).
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the entries, oldest first.
    Log,
    /// Check the whole chain and the catalog's copy; names the first broken entry (exit 20).
    Verify,
    /// Write the entries of a time range with their anchoring hashes (JSON), for an auditor to
    /// keep: the hash before the first entry and the hash of the last one tie the segment to
    /// the chain.
    Export {
        /// RFC 3339 time or date (inclusive), e.g. 2026-10-01.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time or date (exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a key slot: another passphrase, key file or recovery key for the same repository.
    Add(KeyAddArgs),
    /// List key slots and data-key epochs (with the objects still sealed under each).
    List,
    /// Remove a key slot (by id or a unique prefix of it); neither the last slot nor the one
    /// that opened the repository can be removed.
    Remove {
        /// The slot's id or a unique prefix of it, as `drvault key list` shows it.
        #[arg(value_name = "SLOT")]
        slot: String,
    },
    /// Wrap the slot the current passphrase opens under a new passphrase.
    Passwd {
        /// Read the new passphrase from this file (first line) instead of prompting twice.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Start a new data-key epoch: new data is sealed under it at once.
    Rotate(KeyRotateArgs),
    /// Rewrite every object sealed under a retiring epoch, then retire those epochs.
    Reencrypt,
}

#[derive(Debug, Args)]
pub struct KeyRotateArgs {
    /// Then rewrite every object under the new epoch and retire the old ones (as `key reencrypt`).
    #[arg(long)]
    pub reencrypt: bool,
    /// Also replace the master key (after a suspected compromise): the slot in use is wrapped
    /// again, every other slot is removed. See docs/THREAT-MODEL.md.
    #[arg(long)]
    pub master: bool,
    /// Rotate only when the policy says so ([keys] rotate_every, rotate_after_blobs in the
    /// config file; defaults 90 days and 2^28 blobs); otherwise say why not and do nothing.
    #[arg(long, conflicts_with = "master")]
    pub if_due: bool,
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// What the new slot holds.
    #[arg(long, value_enum, default_value = "passphrase")]
    pub kind: KeyKindArg,
    /// Read the new passphrase from this file (first line) instead of prompting twice; for
    /// --kind keyfile, the key file (every byte of it).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Who or what holds the new key (shown by `key list`) [default: user@host; "recovery"].
    #[arg(long, value_name = "TEXT", conflicts_with = "host")]
    pub label: Option<String>,
    /// For --kind host: the host the key belongs to, as its snapshots name it [default: this
    /// machine's host name].
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Argon2id memory in KiB for the new slot (default 65536; lower only for tests).
    #[arg(long, hide = true)]
    pub kdf_memory_kib: Option<u32>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyKindArg {
    /// A passphrase, read from --new-password-file or prompted twice.
    Passphrase,
    /// A key file: every byte of --new-password-file.
    Keyfile,
    /// A generated recovery key, shown once (as `init` does).
    Recovery,
    /// A host's put-only key (a passphrase): it backs up, deduplicating against the whole
    /// repository, but opens nothing stored — no snapshot, file, tree or audit entry.
    Host,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Argon2id memory in KiB for the passphrase slot (default 65536; lower only for tests).
    #[arg(long, hide = true)]
    pub kdf_memory_kib: Option<u32>,
    /// Repository format version: 2 (host keys; the default) or 1 (as drvault before 0.7
    /// wrote, for tests of `migrate`).
    #[arg(long, hide = true, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub format_version: u32,
    /// zstd compression level for new data (2: 50% faster than 3 for 2% larger output here).
    #[arg(long, default_value_t = 2)]
    pub compression_level: i32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up; with --stdin-from-command, the command and its
    /// arguments (after `--`).
    #[arg(required_unless_present = "stdin", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Back up the standard output of the command given after `--` (no shell) as one file;
    /// a command that exits non-zero fails the backup and leaves no snapshot.
    #[arg(long, requires = "paths", conflicts_with = "stdin")]
    pub stdin_from_command: bool,
    /// Back up drvault's standard input as one file.
    #[arg(long, conflicts_with = "paths")]
    pub stdin: bool,
    /// The file's path in the snapshot for --stdin and --stdin-from-command.
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    pub stdin_filename: String,
    /// Variables for the --stdin-from-command command (set by the agent's `env`).
    #[arg(skip)]
    pub command_env: Vec<(String, String)>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Skip paths matching this glob (repeatable); a pattern without '/' matches any name.
    #[arg(short = 'e', long = "exclude")]
    pub excludes: Vec<String>,
    /// Do not cross into other file systems.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Use this snapshot as the parent instead of the latest one of the same host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Record this host name instead of the system's.
    #[arg(long)]
    pub host: Option<String>,
    /// Create the repository first if there is none (non-interactive first run).
    #[arg(long)]
    pub init: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot ID (or unique prefix) or "latest".
    pub snapshot: String,
    /// Only list this path of the snapshot (a directory: what is below it).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

/// Which snapshots "latest", a prefix or --at choose from.
#[derive(Debug, Args, Clone, Default)]
pub struct SnapshotFilter {
    /// Only consider snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only consider snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only consider snapshots that backed up this path (repeatable: all of them).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["add", "remove", "set"])))]
pub struct TagArgs {
    /// The snapshots (IDs, unique prefixes, or "latest").
    #[arg(required = true, value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` clears them).
    #[arg(long, value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A snapshot (ID, unique prefix or "latest"); the whole repository without one.
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// A shell pattern: without '/', matched against names (`*.conf`); with '/', against whole
    /// paths, each component a pattern (`/home/*/.ssh/authorized_keys`).
    pub pattern: String,
    /// Only the N newest snapshots that pass the filters.
    #[arg(long, value_name = "N")]
    pub newest: Option<usize>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot (ID, unique prefix or "latest").
    pub from: String,
    /// The newer snapshot.
    pub to: String,
    /// Only below this path.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Which snapshots "latest" (and a prefix) choose from.
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot ID (or unique prefix) or "latest".
    pub snapshot: String,
    /// The path in the snapshot, as `ls` prints it.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Write a tar stream (with owners, modes and times) even for a single file; a directory
    /// is always written as one.
    #[arg(long, value_enum)]
    pub archive: Option<ArchiveFormat>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// An empty directory: snapshots/<id>/, hosts/<host>/<time>/ (and latest), tags/<tag>/<time>/.
    pub mountpoint: PathBuf,
    /// Let other users in (each entry's mode and owner still apply; needs `user_allow_other` in
    /// /etc/fuse.conf when not root).
    #[arg(long)]
    pub allow_other: bool,
    /// MiB of decrypted file data kept in memory for reads.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub cache_mib: usize,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveFormat {
    Tar,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot ID (or unique prefix) or "latest"; may be left out with --at.
    pub snapshot: Option<String>,
    /// Restore the newest snapshot taken at or before this time: "2026-12-01 20:53:31" as
    /// `snapshots` prints it (UTC), RFC 3339 with a zone, or a date (its end).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Only restore this path of the snapshot and what is below it (repeatable); a component may
    /// be a pattern (`/home/*/.ssh`).
    #[arg(long = "include", value_name = "PATH")]
    pub includes: Vec<PathBuf>,
    /// Directory to restore into (created when missing).
    #[arg(short = 't', long)]
    pub target: PathBuf,
    /// Re-read every restored file and check it against the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// A regular file already at an entry's name: replace it (always); keep it when it already
    /// holds the snapshot's content, checked chunk by chunk, so a rerun of an interrupted
    /// restore resumes (if-changed); or leave it (never).
    #[arg(long, value_enum, default_value = "always")]
    pub overwrite: OverwriteArg,
    /// Leave out entries matching this pattern, and what is below them (repeatable): a name
    /// pattern (`*.log`) anywhere, or an absolute path pattern (`/home/*/.cache`).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<PathBuf>,
    /// Remove what the target holds beyond the snapshot, in the directories restored in full
    /// (excluded entries are kept).
    #[arg(long)]
    pub delete: bool,
    /// Change nothing; print what would be restored, replaced, kept and deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore a snapshot even when its writer is not what it claims (a host key's snapshot
    /// naming another host, or without a valid proof; `snapshots` marks them with "!").
    /// Without it, "latest" and --at pass over such snapshots and an ID naming one is refused.
    #[arg(long)]
    pub trust_host: bool,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also download every pack and verify every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Verify this percentage of packs, chosen at random ("5" or "5%", from 0 to 100).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub read_data_subset: Option<f64>,
    /// Also compare the object lists of all targets and, with --read-data, verify every copy
    /// on every target; reports missing and damaged copies per target.
    #[arg(long)]
    pub all_targets: bool,
    /// Check every target's copies without the passphrase (object names are hashes of their
    /// bytes): for a verifier that must not hold decryption keys. Implies --all-targets.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub no_key: bool,
    /// Also require every object on the locked targets to be locked until at least this time
    /// (RFC 3339, a date, or e.g. "30d" from now).
    #[arg(long, value_name = "TIME")]
    pub locked_until: Option<String>,
}

/// A percentage from 0 to 100, with or without a trailing "%".
fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim_end();
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{text:?} is not a percentage from 0 to 100 (e.g. 5 or 5%)"
        )),
    }
}
