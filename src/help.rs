//! `--help` in the reader's language. clap writes its help from the doc comments, in English;
//! for Vietnamese the command tree is rewritten before parsing from the catalogue's `help-*`
//! messages: each command's summary (`help-about-<command path>`), each argument's help
//! (`help-arg-<command path>-<argument id>`), the headings, the help and version flags, the
//! defaults and the possible values, and the `help` subcommand. en.ftl holds the same
//! messages, equal to the doc comments (a test keeps them so), so that a translator reads the
//! English beside the Vietnamese and the catalogue test keeps the two complete. clap's own
//! errors (an unknown flag) stay in English: clap has no catalogue for them.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

use crate::i18n::Lang;

/// The language for the help, before the command line is parsed: `--lang vi|en` (or
/// `--lang=vi`) anywhere in it, else the locale. A value clap would refuse is left to clap.
pub fn lang_of_args(args: &[OsString]) -> Lang {
    let mut flag = None;
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        let value = match arg.strip_prefix("--lang") {
            Some("") => it.next().map(|v| v.into_owned()),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        };
        match value.as_deref() {
            Some("vi") => flag = Some(Lang::Vi),
            Some("en") => flag = Some(Lang::En),
            _ => {}
        }
    }
    Lang::choose(flag)
}

/// The command tree as the reader reads it: its help folded at 100 columns (at most: a
/// narrower terminal folds it narrower); unchanged otherwise in English, rewritten in
/// Vietnamese.
pub fn localise(command: Command, lang: Lang) -> Command {
    let command = command.max_term_width(crate::i18n::WIDTH);
    if lang == Lang::En {
        return command;
    }
    let version = flag(lang, "version", 'V', ArgAction::Version);
    walk(command, "root", lang).disable_version_flag(true).arg(version)
}

/// clap's own `-h, --help` or `-V, --version`, in the reader's language, listed last.
fn flag(lang: Lang, name: &'static str, short: char, action: ArgAction) -> Arg {
    Arg::new(name)
        .short(short)
        .long(name)
        .action(action)
        .help(lang.t(&format!("help-flag-{name}")))
        .help_heading(lang.t("help-heading-options"))
        .display_order(usize::MAX)
}

/// `help` of a rewritten tree, at any level (`dvc-sync help report`, `dvc-sync mock help
/// national`): the command line that prints the same help through `--help`, or None when the
/// command line is not that.
pub fn help_subcommand(matches: &clap::ArgMatches) -> Option<Vec<String>> {
    let mut args = vec!["dvc-sync".to_owned()];
    let mut level = matches;
    loop {
        let (name, sub) = level.subcommand()?;
        if name == "help" {
            args.extend(sub.get_many::<String>("command").into_iter().flatten().cloned());
            args.push("--help".to_owned());
            return Some(args);
        }
        args.push(name.to_owned());
        level = sub;
    }
}

/// clap's `help` subcommand, in the reader's language (clap's own cannot be translated).
fn help_command(lang: Lang) -> Command {
    Command::new("help").about(lang.t("help-about-help")).arg(
        Arg::new("command")
            .action(ArgAction::Append)
            .num_args(0..)
            .value_name("COMMAND")
            .help(lang.t("help-arg-help-command")),
    )
}

fn walk(mut command: Command, path: &str, lang: Lang) -> Command {
    if let Some(about) = lang.lookup(&format!("help-about-{path}")) {
        command = command.about(about).long_about(None);
    }
    let ids: Vec<String> = command.get_arguments().map(|a| a.get_id().to_string()).collect();
    for id in ids {
        let key = format!("help-arg-{path}-{id}");
        command = command.mut_arg(&id, |a| localise_arg(a, lang, &key));
    }
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in &names {
        let sub = if path == "root" { name.clone() } else { format!("{path}-{name}") };
        command = command.mut_subcommand(name, |s| walk(s, &sub, lang));
    }
    if !names.is_empty() {
        command = command.disable_help_subcommand(true).subcommand(walk(help_command(lang), "help", lang));
    }
    let help = flag(lang, "help", 'h', ArgAction::Help);
    let template = format!(
        "{{before-help}}{{about-with-newline}}\n{}: {{usage}}\n\n{{all-args}}{{after-help}}",
        lang.t("help-usage")
    );
    command
        .disable_help_flag(true)
        .arg(help)
        .subcommand_help_heading(lang.t("help-heading-commands"))
        .help_template(template)
}

fn localise_arg(mut arg: Arg, lang: Lang, key: &str) -> Arg {
    let heading = if arg.is_positional() { "help-heading-arguments" } else { "help-heading-options" };
    arg = arg.help_heading(lang.t(heading));
    let Some(mut text) = lang.lookup(key) else { return arg };
    let takes_values = arg.get_action().takes_values();
    let defaults: Vec<String> =
        arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if takes_values && !defaults.is_empty() && !arg.is_hide_default_value_set() {
        text = format!("{text} [{}: {}]", lang.t("help-default"), defaults.join(" "));
        arg = arg.hide_default_value(true);
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .collect();
    if takes_values && !values.is_empty() && !arg.is_hide_possible_values_set() {
        text = format!("{text} [{}: {}]", lang.t("help-values"), values.join(", "));
        arg = arg.hide_possible_values(true);
    }
    arg.help(text).long_help(None)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Every command an operator uses and each of its arguments has its help in the catalogue,
    /// and the English there is the doc comment's, word for word: the Vietnamese cannot fall
    /// behind the code unnoticed.
    #[test]
    fn the_catalogue_covers_the_operators_commands_and_its_english_is_the_code_s() {
        fn visit(command: &Command, path: &str, seen: &mut Vec<String>) {
            let about = format!("help-about-{path}");
            if !command.is_hide_set() && !path.starts_with("simulate") {
                let en = command.get_about().map(|a| a.to_string()).unwrap_or_default();
                assert_eq!(Lang::En.lookup(&about).as_deref(), Some(en.as_str()), "{about}");
                seen.push(about);
                for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
                    let key = format!("help-arg-{path}-{}", arg.get_id());
                    let en = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    // The mocks' many knobs are for developers: their help may stay English.
                    if path.starts_with("mock") && Lang::En.lookup(&key).is_none() {
                        continue;
                    }
                    assert_eq!(Lang::En.lookup(&key).as_deref(), Some(en.as_str()), "{key}");
                    seen.push(key);
                }
            }
            for sub in command.get_subcommands() {
                let p = if path == "root" {
                    sub.get_name().to_owned()
                } else {
                    format!("{path}-{}", sub.get_name())
                };
                visit(sub, &p, seen);
            }
        }
        let mut seen = Vec::new();
        visit(&Cli::command(), "root", &mut seen);
        assert!(seen.len() > 45, "{seen:?}");
        for key in &seen {
            assert!(
                Lang::Vi.lookup(key).is_some_and(|vi| Some(&vi) != Lang::En.lookup(key).as_ref()),
                "{key}"
            );
        }
    }

    fn help_of(lang: Lang, args: &[&str]) -> String {
        let mut command = localise(Cli::command(), lang);
        let mut argv = vec!["dvc-sync"];
        argv.extend(args);
        match command.try_get_matches_from_mut(argv) {
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.render().to_string(),
            Ok(m) => match help_subcommand(&m) {
                Some(again) => match localise(Cli::command(), lang).try_get_matches_from(again) {
                    Err(e) => e.render().to_string(),
                    Ok(_) => panic!("help printed nothing"),
                },
                None => panic!("not help: {args:?}"),
            },
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_help_reads_in_vietnamese_with_clap_s_own_words_too() {
        let top = help_of(Lang::Vi, &["--help"]);
        for said in [
            "Cách dùng: dvc-sync",
            "Lệnh:",
            "Tùy chọn:",
            "In hướng dẫn",
            "In phiên bản",
            "Tệp cấu hình",
            "[giá trị hợp lệ: vi, en]",
        ] {
            assert!(top.contains(said), "{said:?} not in\n{top}");
        }
        for english in [
            "Usage:",
            "Commands:",
            "Options:",
            "Print help",
            "Print version",
            "possible values",
            "Keeps provincial",
        ] {
            assert!(!top.contains(english), "{english:?} in\n{top}");
        }
        let report = help_of(Lang::Vi, &["report", "--help"]);
        assert!(
            report.contains("Cách dùng: dvc-sync report") && report.contains("Quyết định 766"),
            "{report}"
        );
        assert!(report.contains("Tệp cấu hình"), "the global --config is there, translated: {report}");
        let source = help_of(Lang::Vi, &["check-source", "-h"]);
        assert!(source.contains("[mặc định: 20]") && !source.contains("[default"), "{source}");
        let retry = help_of(Lang::Vi, &["retry", "--help"]);
        assert!(retry.contains("Đối số:") && retry.contains("[MAHOSO]"), "{retry}");
        // `dvc-sync help report` is `dvc-sync report --help`, at any level.
        assert_eq!(help_of(Lang::Vi, &["help", "report"]), report);
        let national = help_of(Lang::Vi, &["mock", "national", "--help"]);
        assert!(national.contains("Cách dùng: dvc-sync mock national"), "{national}");
        assert_eq!(help_of(Lang::Vi, &["mock", "help", "national"]), national);
        assert_eq!(help_of(Lang::Vi, &["help", "mock", "national"]), national);
        // At most 100 columns, in both languages.
        for lang in [Lang::Vi, Lang::En] {
            for args in [&["--help"][..], &["report", "--help"], &["check-source", "--help"]] {
                let help = help_of(lang, args);
                assert!(help.lines().all(|l| l.chars().count() <= crate::i18n::WIDTH), "{help}");
            }
        }
        // English is clap's own, from the doc comments.
        let en = help_of(Lang::En, &["--help"]);
        assert!(en.contains("Usage: dvc-sync") && en.contains("Keeps provincial dossiers"), "{en}");
    }

    #[test]
    fn the_language_of_the_help_comes_from_the_flag_before_parsing() {
        assert_eq!(lang_of_args(&os(&["dvc-sync", "--lang", "vi", "status"])), Lang::Vi);
        assert_eq!(lang_of_args(&os(&["dvc-sync", "status", "--lang=en"])), Lang::En);
        assert_eq!(lang_of_args(&os(&["dvc-sync", "retry", "--", "--lang", "vi"])), Lang::choose(None));
    }
}
