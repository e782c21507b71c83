# dvc-sync's words for people, in English. Every message here has its twin in vi.ftl with the
# same arguments (tested). JSON, CSV, metric names and log fields never come from here.

## Common

never = never
not-applicable = N/A
count-dossiers = { $n ->
    [one] { $n } dossier
   *[other] { $n } dossiers
}

## status

label-health = health
label-daemon = daemon
label-dossiers = dossiers
label-coverage = coverage
label-outbox = outbox
label-poll = poll
label-source = source
label-push = push
label-verified = verified
label-personal = personal
label-workers = workers
label-blank = {""}
health-ok = OK
health-degraded = DEGRADED
health-failing = FAILING
daemon-running = running
daemon-stopped = stopped
daemon-stale = stale (no recent heartbeat)
daemon-pid = { $state } (pid { $pid })
daemon-pid-version = { $state } (pid { $pid }, v{ $version })
daemon-heartbeat = { $daemon }, heartbeat { $seconds } s ago
status-dossiers = { $total } total: { $in_sync } in sync, { $pending } pending, { $retrying } retrying, { $dead } dead, { $quarantined } quarantined
status-outbox = { $depth } waiting, oldest { $seconds } s
status-poll = last success { $last }
status-poll-cursor = last success { $last }, cursor { $at } { $id }
status-last-error = last error: { $error }
status-source = { $name } ({ $kind }): { $dossiers } dossiers, { $state }
status-source-retired = retired (no longer configured; its dossiers are still verified)
status-push = last success { $last }, session renewals { $renewals }
status-verified = { $percent } % at the national side, oldest verification { $days } days ago; drift found { $found }, repaired { $repaired }; last pass { $last }
status-not-sealed = not sealed (store.key_file)
status-sealed = sealed (key { $keys })
status-sealed-partly = sealed from the key's start (key { $keys }); those stored before are not until `dvc-sync rekey`
status-personal = { $clear } dossier(s) hold personal data in clear, { $minimised } minimised; { $quarantined } quarantined record(s) whole; bodies { $sealed }
worker-busy = busy
worker-idle = idle
worker-failing = failing
worker-stopped = stopped
status-worker-failures = { $name } { $state } ({ $n } failures in a row)
status-as-recorded = as last recorded: { $list }
parked-kind = parked
parked-key = MaHoSo / key
parked-reason = reason
parked-dead = dead
parked-quarantined = quarantined
status-parked-more = ... and { $n } more (`dvc-sync status --json` lists the first { $listed })
problem-dead = { $n } dossier(s) refused by the national portal (dead); fix the cause, then `dvc-sync retry --dead`
problem-unmatched = { $n } dossier(s) parked because their national history holds entries that match none of ours (read-back inconclusive; nothing was resent); compare with the national portal, then `dvc-sync retry --dead`
problem-quarantined = { $n } provincial record(s) quarantined (never sent); fix them at the source or the status_map, then `dvc-sync retry --quarantined`
problem-stale = the daemon's heartbeat is { $seconds } s old and it did not stop cleanly (hung or killed)
problem-no-heartbeat = the daemon holds the lock but has not written a heartbeat
problem-outbox-old = the oldest change has waited { $seconds } s in the outbox (threshold { $threshold } s)
problem-audit-behind = verification is behind its cycle: a dossier was last known good at the national side { $days } days ago (national.audit_cycle_days { $cycle }); raise national.audit_per_second or run `dvc-sync audit`
problem-push-refused = { $reason } (docs/operations.md, "The first hour")
problem-source-failing = polling source { $source } has been failing: { $error }
problem-poll-failing = polling the provincial portal has been failing: { $error }
problem-push-failing = pushing to the national portal has been failing: { $error }
problem-unreadable = cannot read the state in { $path }: { $reason }

## report

report-title = Quyết định 766 indicators, { $from } to { $to } (from the local database)
report-indicator = indicator
report-name = {""}
report-share = share
report-fraction = numerator/denominator
report-points-header = points
report-points = { $percent } % of its maximum
report-points-note = points: only 3.3 (full at 50 %), 4.2 and 4.3 (full at 80 %) have a rule; "-" where the spec gives none
report-per-agency = per DonViXuLy
report-per-procedure = per MaTTHC
report-dash-note = "-": no dossier to count (denominator 0); numerators and denominators: --csv or --json
report-late-summary = { $total } dossier(s) count late under 2.1; late by cause: { $source } at the source, { $sync } by synchronisation (on time at the source, acknowledged by the national portal after the deadline)
report-receipt-summary = online dossiers received later than the receipt rule (8 working hours): { $source } at the source, { $sync } by synchronisation
report-late-hint = (--late lists them with the reason and the cause)
report-late-processing = late dossiers (2.1)
report-late-receipt = online dossiers received late
report-findings = { $n } finding(s) that skew the figures without being late (counted as they are):
report-not-counted = not in the figures: { $quarantined } quarantined record(s) (status lists them), { $refused } dossier(s) of the period refused by the national portal (in 1.4's denominator only)
late-not-received = not received
cause-source = at the source
cause-sync = by synchronisation
indicator-1-4 = dossiers synchronized
indicator-2-1 = processed early or on time
indicator-3-3 = submitted online
indicator-3-6 = paid online
indicator-4-1 = electronic results
indicator-4-2 = digitised
indicator-4-3 = reused digitised data
judgement = { $verdict }: { $how }{ $minus }, against { $against }
judgement-supplement = , { $time } of supplement time subtracted
verdict-on-time = on time
verdict-late = late
end-status = ended in status { $status } at { $at }
end-one-supplement = one supplement request and no end yet: the request is the end
end-many-supplements = late: { $n } supplement requests and no end yet
end-open = still open at the period's end
against-due = NgayHenTra { $at }
against-duration = no NgayHenTra; the procedure's duration ends { $at }
against-nothing = no NgayHenTra and no duration known for the procedure: not judged late
duration-days = { $n } days
duration-hours = { $n } hours
late-cause-minutes = { $cause }, sync added { $minutes } min
late-times = counted end { $end }, deadline { $deadline }
late-receipt-times = submitted { $submitted }, to be received by { $due }, received { $received }

## the page

page-title = dvc-sync: dossiers synchronized with the National Public Service Portal
page-generated = computed at { $at } (Vietnam time) from the local database
page-footer = No personal data on this page: MaHoSo, procedures and agencies only. Figures as `dvc-sync report --json` and `status --json` compute them.
page-health = Synchronization
page-dossiers-total = dossiers
page-in-sync = in sync
page-coverage = coverage (current at the national portal)
page-verified = verified by reading back from the national portal
page-backlog = changes waiting to be sent
page-backlog-age = oldest waiting change (lag)
page-seconds = { $n } s
page-quarantined = quarantined records
page-dead = refused by the national portal
page-source = source
page-kind = kind
page-source-dossiers = dossiers
page-last-success = last read
page-last-error = last error
page-retired = retired
page-parked = Parked, and why
page-parked-total = { $n } item(s) parked (quoted values hidden)
page-count = count
page-score = The 766 score, { $from } to { $to }
page-score-note = The six groups as the national portal publishes them. Only the indicators our synchronized data decides are computed here; the rest is the portal's own.
page-group = group
page-points = points
page-our-data = what our data decides
page-not-ours = what it cannot decide
page-none-of-ours = nothing: this group is not computed from synchronized dossiers
group-public = Publicity, transparency
group-public-not-ours = publication of procedures and results on the portals
group-progress = Processing on time
group-progress-not-ours = the national reporting system's own count
group-online = Online public services
group-online-not-ours = the catalogue of services offered online
group-payment = Online payment
group-payment-not-ours = payments made outside the dossier's record
group-satisfaction = Satisfaction
group-satisfaction-not-ours = citizens' ratings on the national portal
group-digitisation = Digitisation of dossiers
group-digitisation-not-ours = reuse from the national data stores
page-over-time = Each indicator over the last twelve months
page-late-chart = late dossiers per month: grey at the source, red by synchronisation
page-agencies = Per DonViXuLy, this month (the line: twelve months)
page-late = Late dossiers this month, with their cause
page-cause = cause
page-sync-minutes = minutes added by sync
page-counted-end = counted end
page-deadline = deadline
page-submitted = submitted
page-receipt-due = to be received by
page-received = received
page-more-late = Only the first 200 of each list are shown: `dvc-sync report --late` lists them all.

## check-source

check-label-source = source
check-label-profile = profile
check-label-server = server
check-label-tls = tls
check-label-time-zone = time zone
check-label-index = index
check-label-error = error
check-label-read = read
check-label-warning = warning
check-label-summary = summary
check-source-target = { $name }: { $kind } at { $target }
check-server = { $server } as { $user }
check-session-zone = session { $zone }
check-read = the first { $n } dossiers in { $ms } ms
check-source-id = {" "}(source id { $id })
check-no-mahoso = (no MaHoSo)
check-send = status { $status }, { $entries } history entries
check-from-catalogue = (from LayThuTuc)
check-summary = { $send } would be sent, { $quarantine } would be quarantined

## status --dossier, and the operator commands' summaries

dossier-unknown = no dossier { $mahoso } in this database: unknown here, never read from the source (check the MaHoSo; `dvc-sync status` lists what is parked)
dossier-label = dossier
dossier-label-state = state
dossier-label-local = provincial
dossier-label-source = source
dossier-label-national = national
dossier-label-audit = audit
dossier-label-attempts = attempts
dossier-label-next = next
dossier-label-error = last error
dossier-label-quarantine = quarantine
dossier-label-calls = calls
sync-state-in_sync = in sync
sync-state-pending = pending
sync-state-retrying = retrying
sync-state-dead = dead (refused by the national portal)
sync-state-quarantined = quarantined
sync-state-unknown = unknown
dossier-local = version { $version } ({ $at }), status { $status } { $name } (local "{ $local }"), { $entries } history entries
dossier-moved-from = , moved from { $source }
dossier-ignored = , { $n } later version(s) of the old copy ignored
dossier-none = none
dossier-national = { $exists }, status { $status }, fields { $fields }, { $entries } history entries acknowledged
dossier-exists = exists
dossier-not-created = not created
dossier-current = current
dossier-behind = behind
dossier-uncertain = , a write's outcome is being resolved
dossier-verified = verified { $at }
dossier-verified-before = verified { $at }, before the last acknowledgement
dossier-never-verified = never verified
dossier-read-back = ; last read-back { $at } found: { $finding }
dossier-no-calls = none to the national portal yet
dossier-calls = the last { $n } (at most { $kept } are kept per dossier)
calls-at = national call (newest first)
calls-service = service
calls-outcome = outcome
calls-code = code
calls-message = what it carried or found
audit-summary = audited { $audited } dossier(s) ({ $scope } scope, { $per_second } a second): { $verified } verified, { $drifted } drifted, { $failed } failed, { $changed } moved on during the look-up
audit-drift = drift { $kinds }; { $repairs } repair(s) enqueued, { $parked } parked (national history not ours: see `dvc-sync status`); the dossiers:
audit-verified = verified { $percent } % at the national side
retry-summary = re-enqueued { $dead } dead dossier(s); released { $quarantined } quarantined record(s) to be judged again by the next full pass
reconcile-summary = reconciled { $records } records: { $drift } changes the poller had missed, { $quarantined } quarantined, { $requeued } dossiers re-enqueued; coverage { $coverage }%
backup-summary = backed up { $dossiers } dossiers to { $path } ({ $bytes } bytes, { $seconds } s, integrity { $integrity }); restored, every dossier is read back before it is written to
forget-summary = erased the personal data of { $dossiers } dossier(s) and { $quarantined } quarantined record(s); journalled without the data
forget-not-found = nothing held of: { $list }
rekey-summary = sealed { $sealed } stored value(s) under key { $key } ({ $already } were already) in { $seconds } s
rekey-vacuumed = ; free pages rewritten (VACUUM)
rekey-not-vacuumed = ; the daemon runs: free pages from before are rewritten by a rekey with it stopped
rekey-wal = ; the WAL is in use and still holds pages of before until it is overwritten (run rekey again with the daemon stopped)

## demo

demo-title = dvc-sync demo: { $seconds } s
demo-label-dossiers = dossiers
demo-label-history = history entries
demo-label-coverage = coverage
demo-label-quarantined = quarantined
demo-label-refused = refused (dead)
demo-label-faults = faults absorbed
demo-label-retries = retries
demo-label-lag = lag
demo-label-throughput = throughput
demo-label-verdict = verdict
demo-label-766 = Quyết định 766
demo-dossiers = { $filed } filed, { $valid } valid, { $changes } changes
demo-history = { $provincial } at the province, { $national } at the national portal
demo-coverage = { $percent } % of valid dossiers current nationally (the daemon's own figure, { $daemon } %, counts refused ones as not current)
demo-as-injected = exactly as injected
demo-not-as-injected = NOT as injected
demo-faults = { $total }: { $national }; { $sessions } sessions renewed; { $pages } provincial pages failed
demo-retries = { $retries } (and { $read_backs } read-backs of uncertain writes)
demo-lag = p50 { $p50 }, p99 { $p99 } (provincial change to national acknowledgement)
demo-throughput = { $dossiers } dossiers/s synchronized, { $items } national items/s
demo-verdict = { $lost } lost, { $duplicated } duplicated, { $out_of_order } out of order: { $kept }
demo-promise-kept = PROMISE KEPT
demo-promise-broken = PROMISE BROKEN
demo-766 = { $from } to { $to }: dvc-sync report (local) / the national side's own figures
demo-agree = the two agree number for number (1.4: the national side counts only what it holds)
demo-disagree = THE TWO DISAGREE
merger-source = source { $name } ({ $unit }): owns { $dossiers } dossiers; { $synchronized }/{ $valid } valid dossiers current nationally
merger-summary = moved at the cutover { $moved }; old versions ignored { $ignored }; quarantined { $quarantined }; duplicates { $duplicates }, out of order { $out_of_order }, status regressions { $regressions }; { $seconds } s
merger-kept = verdict: kept (0 lost, 0 duplicates, 0 regressions, nothing re-keyed)
merger-not-kept = verdict: NOT kept

## configuration

config-invalid = invalid configuration ({ $n ->
    [one] { $n } problem
   *[other] { $n } problems
}):
cfg-set-by-env = (set by the environment variable { $var })
cfg-merge = { $detail }
cfg-file-missing = cannot read the configuration file: no such file
cfg-file-unreadable = cannot read the configuration file: { $detail }
cfg-toml-syntax = line { $line }, column { $column }: TOML syntax error: { $detail } (the line is not shown: it may hold a secret)
cfg-toml-syntax-key = line { $line }, column { $column } (key { $key }): TOML syntax error: { $detail } (the line is not shown: it may hold a secret)
cfg-expected = expected { $wanted ->
    [text] text in quotes
    [integer] a whole number
    [number] a number
   *[bool] true or false
}, not { $given ->
    [boolean] a boolean
    [integer] a whole number
    [float] a number with a fraction or an exponent
    [not-one] text that is not one
    [table] a table
    [list] a list
   *[nothing] nothing
}
cfg-expected-detail = expected { $what ->
    [string] a string
    [bool] true or false
    [number] a number
   *[integer] an integer
} ({ $detail })
cfg-cannot-read = cannot be read: { $detail }
cfg-seconds-zero-or-more = must be 0 or more seconds
cfg-seconds-positive = must be more than 0 seconds
cfg-seconds-max = must be at most { $max } seconds (30 days)
cfg-seconds-within = must be from { $min } to { $max } seconds ({ $why ->
    [poll] more often floods the source with queries; less often is not a daemon's pace
   *[drain] the unit's TimeoutStopSec must stay above it, or systemd kills the drain
})
cfg-count-within = must be from { $min } to { $max }, not { $value }
cfg-url-scheme = { $value } must be an http:// or https:// URL with a host
cfg-url-invalid = { $value } is not a URL: { $detail }
cfg-not-a-file = { $path } is not a readable file
cfg-no-pem = { $path } holds no PEM certificate (-----BEGIN CERTIFICATE-----)
cfg-secret-both = set either { $key } or { $file }, not both
cfg-required-or = required (or { $file })
cfg-required = required
cfg-required-oauth2 = required with national.auth = "oauth2"
cfg-auth = must be "session" or "oauth2", not { $value }
cfg-retry-max = must not be less than retry_initial_seconds
cfg-status-map = expected a table of local status = national code ({ $detail })
cfg-status-code = must be a national status code from 1 to 10, not { $value }
cfg-empty = must not be empty
cfg-offset = { $value } is not an offset like +07:00
cfg-timezone = { $value } is not a time zone ({ $detail })
cfg-sql-scheme = must start with mysql://, mariadb:// or postgres:// (SQL Server is not supported yet)
cfg-sql-url = is not a URL like mysql://user:password@host:3306/database (a password with @, : or / in it must be percent-encoded)
cfg-sql-profile = required with kind = "sql" (a built-in name such as "opencps-v2", or a path)
cfg-document-url = must start with https:// or http://
cfg-previous-key = is for a rotation to store.key_file, which is not set
cfg-key-short = { $path } holds { $len } bytes; a key is at least { $min } random bytes (head -c 32 /dev/urandom > FILE)
cfg-provincial-and-sources = [provincial] and [sources.*] are both set: a merged province names every source under [sources.<name>] (the old [provincial] keys go to one of them, e.g. [sources.provincial])
cfg-source-name = a source's name is lowercase letters, digits, - and _ (it is a metric label)
cfg-supersedes-cycle = { $name } supersedes itself through { $through }: ownership moves one way only
cfg-kind = must be "http" or "sql", not { $value }
cfg-not-another-source = { $value } is not another source's name
cfg-list = expected a list of text in quotes, such as ["a", "b"]
cfg-unit-code = { $value } is not a unit code like "000.00.00.H58"
cfg-predecessor-self = { $code } is national.madonvi itself
cfg-audit-rate = must be from 0 (off) to 1000 look-ups a second
cfg-audit-cycle = must be more than 0 and at most 3650 days
cfg-log-format = must be "json" or "pretty", not { $value }
cfg-listen = { $value } is not an address like 127.0.0.1:9187
cfg-token-short = the token must be at least 16 characters
cfg-periods-overlap = the periods overlap
cfg-periods-none = must list at least one period like "07:30-11:30"
cfg-period-invalid = { $value } is not a period like "07:30-11:30"
cfg-period-backwards = { $value } ends before it starts
cfg-weekday = { $value } is not a day like "mon" .. "sun"
cfg-date = { $value } is not a date like "2026-09-02"
cfg-receipt-hours = must be more than 0 and at most 1000 working hours
cfg-heartbeat = must be shorter than daemon.stale_heartbeat_seconds, or a running daemon reads as stale
cfg-unknown-key = unknown key (see config/default.toml for every key)
cfg-secret-unreadable = cannot read { $path }: { $detail }
cfg-secret-exposed = { $path } is readable by group or others (mode { $mode }); chmod 600 it
cfg-secret-not-utf8 = { $path } is not UTF-8 text
cfg-secret-empty = { $path } is empty
cfg-digest-key = the digest key beside the database, { $path }: { $detail }
check-config-file = configuration file: { $path }
check-config-no-file = no configuration file ({ $path } does not exist): built-in defaults and the environment
check-config-credentials = credentials from { $path }

## --help (the English is the doc comments' in src/cli.rs, word for word: a test compares them)

help-usage = Usage
help-heading-commands = Commands
help-heading-options = Options
help-heading-arguments = Arguments
help-default = default
help-values = possible values
help-flag-help = Print help
help-flag-version = Print version
help-about-help = Print this message or the help of the given subcommand(s)
help-arg-help-command = The command whose help to print
help-about-root = Keeps provincial dossiers synchronized with the National Public Service Portal
help-arg-root-config = Configuration file [default: /etc/dvc-sync/dvc-sync.toml if present, else built-in defaults]
help-arg-root-lang = The language of what is printed for people (JSON, CSV and logs never change) [default: the locale's (LC_ALL, LC_MESSAGES, LANG) when Vietnamese, else English]
help-about-run = Run the daemon until SIGTERM or SIGINT (exit 0 after a clean drain, 75 after SIGHUP's drain, for a restart; 78 bad config, 1 fatal)
help-about-status = The state of the synchronization, read from the database (exit 0 healthy, 1 degraded, 2 unreadable)
help-arg-status-json = JSON with stable field names
help-arg-status-dossier = One dossier: local and national status, sync state, attempts, last error, history
help-about-check-config = Validate the configuration and print it with secrets redacted (exit 78 when invalid)
help-arg-check-config-credentials = Read the secrets from this directory as the systemd unit hands them over (national-password, provincial-database-url, ...) [default: $CREDENTIALS_DIRECTORY]
help-about-check-source = Read the first records of the provincial source through the configuration and show each as it would be sent, or why it would be quarantined (exit 0 all would be sent, 1 some would be quarantined, 2 the source cannot be read, 78 bad config)
help-arg-check-source-limit = How many dossiers to read, from the first
help-arg-check-source-json = JSON instead of text
help-arg-check-source-show_personal = Show names, ID numbers, phones and emails as they are (masked by default)
help-arg-check-source-source = Only this source (a merged province's `[sources.<name>]`); every source by default
help-about-retry = Re-enqueue parked items: dead dossiers and quarantined records (both when neither flag is given)
help-arg-retry-dead = Dossiers the national portal refused
help-arg-retry-quarantined = Records quarantined locally (they are judged again by the next full pass)
help-arg-retry-mahoso = Only these (MaHoSo, or a quarantine key)
help-about-reconcile = One full reconciliation pass now (by the running daemon if there is one)
help-arg-reconcile-json = Print the report as JSON
help-about-audit = Read dossiers back from the national portal now and repair what it lost (by the running daemon if there is one; exit 0 no drift, 1 drift found or a fatal error, 69 nothing could be read back, 78 bad config or no national account)
help-arg-audit-all = Every synchronized dossier (default: the next due share, at least a day's worth)
help-arg-audit-json = Print the report as JSON
help-arg-audit-per_second = Look-ups a second for this pass [default: national.audit_per_second, or 1 when that is 0]
help-about-report = The Quyết định 766 indicators computed from the local database for a period, for the province, per DonViXuLy and per procedure (read-only: the daemon may run; exit 0 printed, 2 the database is unreadable, 64 a bad period)
help-arg-report-from = First day of the period, YYYY-MM-DD [default: the first of --to's month]
help-arg-report-to = Last day of the period, YYYY-MM-DD [default: today]
help-arg-report-month = A whole month, YYYY-MM [default when no date is given: the current month]
help-arg-report-late = List the dossiers that count late under 2.1, with the reason
help-arg-report-json = JSON with stable field names
help-arg-report-csv = CSV for spreadsheets (with --late: the late dossiers)
help-about-backup = A consistent copy of the live database, safe while the daemon runs (exit 0 written and checked, 1 not)
help-arg-backup-path = Where to write it (must not exist yet); created 0600
help-arg-backup-json = Print the report as JSON
help-about-forget = Erase these dossiers' personal data from the local database, for an erasure already carried out at the source (journalled without the data; exit 0, 78 the key is missing)
help-arg-forget-mahoso = The dossiers (MaHoSo)
help-arg-forget-json = Print the result as JSON
help-about-rekey = Seal every stored body under store.key_file, online beside the running daemon (which must hold the same key) and resumable (exit 0 sealed, 78 the key is missing or wrong)
help-arg-rekey-from = The key the database is sealed with now, for a rotation to store.key_file
help-arg-rekey-json = Print the result as JSON
help-about-demo = The whole system in one process on loopback: both mocks, the daemon, faults, and a verified report (exit 0 only when nothing was lost, duplicated or reordered)
help-arg-demo-dossiers = How many dossiers the province files
help-arg-demo-db = Keep the database here (default: a temporary directory)
help-arg-demo-json = Print the report as JSON
help-arg-demo-seed = Seed of the simulation and the faults
help-arg-demo-merger = A merged province: two provincial systems (H58, then H20 superseding it) and a cutover midway; the verdict per source
help-about-mock = Run a portal mock (for tests, demos and benchmarks; bind it to loopback)
help-about-mock-national = The national DVCQG integration adapter: sessions or an OAuth2 gateway, the four services, faults
help-about-mock-provincial = A simulated provincial one-stop system serving its dossier listing over HTTP
help-about-mock-opencps = The same province written into the OpenCPS v2 tables of a real MariaDB/MySQL or PostgreSQL database, for the SQL source (runs until SIGTERM/SIGINT)
