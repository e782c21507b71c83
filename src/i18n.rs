//! The words people read, in Vietnamese or English: the Fluent catalogues in `i18n/` (one
//! file per language, embedded), the choice of language (`--lang`, else the locale), and
//! numbers written the language's way. JSON, CSV, metric names and log fields never go
//! through here: they are the same in every language (spec: daemon.md, "Commands").

use std::sync::OnceLock;

use fluent_bundle::{FluentArgs, FluentResource, FluentValue, concurrent::FluentBundle};

/// The catalogues, by language: what a translator edits.
pub const CATALOGUES: [(Lang, &str); 2] =
    [(Lang::Vi, include_str!("../i18n/vi.ftl")), (Lang::En, include_str!("../i18n/en.ftl"))];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Lang {
    /// Tiếng Việt
    Vi,
    /// English
    En,
}

impl Lang {
    /// `--lang`, else the locale: the first of `LC_ALL`, `LC_MESSAGES`, `LANG` that is set and
    /// not empty, Vietnamese when it starts with `vi`; else English.
    pub fn choose(flag: Option<Lang>) -> Lang {
        flag.unwrap_or_else(|| Lang::of_locale(|k| std::env::var(k).ok()))
    }

    pub fn of_locale(var: impl Fn(&str) -> Option<String>) -> Lang {
        let locale = ["LC_ALL", "LC_MESSAGES", "LANG"].iter().find_map(|k| var(k).filter(|v| !v.is_empty()));
        match locale {
            Some(l) if l.starts_with("vi") => Lang::Vi,
            _ => Lang::En,
        }
    }

    /// The page's `?lang=`: `en` or `vi`; anything else is the page's default, Vietnamese.
    pub fn of_query(q: Option<&str>) -> Lang {
        if q == Some("en") { Lang::En } else { Lang::Vi }
    }

    /// The BCP 47 tag (`<html lang>`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// The message `id` with no arguments.
    pub fn t(self, id: &str) -> String {
        self.format(id, None)
    }

    /// The message `id` if the catalogue has it (the help's optional messages).
    pub fn lookup(self, id: &str) -> Option<String> {
        bundles()[self as usize].has_message(id).then(|| self.t(id))
    }

    /// The message `id` with `args` (see [`tr!`](crate::tr)).
    pub fn format(self, id: &str, args: Option<&FluentArgs>) -> String {
        let bundle = &bundles()[self as usize];
        let Some(pattern) = bundle.get_message(id).and_then(|m| m.value()) else {
            // Only a catalogue gap gets here, and the test of both catalogues forbids one.
            return id.to_owned();
        };
        let mut errors = Vec::new();
        bundle.format_pattern(pattern, args, &mut errors).into_owned()
    }

    /// `x` with `decimals` digits after the language's decimal mark (`99,50` in Vietnamese).
    pub fn num(self, x: f64, decimals: usize) -> String {
        let s = format!("{x:.decimals$}");
        match self {
            Lang::Vi => s.replace('.', ","),
            Lang::En => s,
        }
    }

    /// A share in 0..=1 as a percentage with two decimals, or N/A (the spec's word; Vietnamese
    /// reports write "Không áp dụng").
    pub fn percent(self, ratio: Option<f64>) -> String {
        match ratio {
            Some(r) => format!("{} %", self.num(r * 100.0, 2)),
            None => self.t("not-applicable"),
        }
    }
}

/// The widest a line printed for people is: a terminal of 100 columns.
pub const WIDTH: usize = 100;

/// `text` after `prefix`, wrapped to [`WIDTH`] columns, later lines indented by the prefix's
/// width (a label column stays a column). Words longer than a line are broken.
pub fn wrap(prefix: &str, text: &str) -> String {
    let indent = " ".repeat(textwrap::core::display_width(prefix));
    wrap_indented(prefix, &indent, text)
}

/// `text` wrapped to [`WIDTH`] columns, its first line after `first`, the others after `rest`.
pub fn wrap_indented(first: &str, rest: &str, text: &str) -> String {
    // Never at a hyphen: `dvc-sync retry` split over two lines cannot be copied.
    let options = textwrap::Options::new(WIDTH)
        .initial_indent(first)
        .subsequent_indent(rest)
        .word_splitter(textwrap::WordSplitter::NoHyphenation);
    textwrap::fill(text, options)
}

static CHOSEN: OnceLock<Lang> = OnceLock::new();

/// Fixes this process's language for people (`--lang`, else the locale); the first call wins.
pub fn choose_for_process(flag: Option<Lang>) -> Lang {
    *CHOSEN.get_or_init(|| Lang::choose(flag))
}

/// This process's language for people: as chosen at start, else the locale's.
pub fn current() -> Lang {
    choose_for_process(None)
}

fn bundles() -> &'static [FluentBundle<FluentResource>; 2] {
    static BUNDLES: OnceLock<[FluentBundle<FluentResource>; 2]> = OnceLock::new();
    BUNDLES.get_or_init(|| CATALOGUES.map(|(lang, text)| bundle(lang, text)))
}

fn bundle(lang: Lang, text: &str) -> FluentBundle<FluentResource> {
    let id = lang.tag().parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // No Unicode isolation marks: the output is a terminal, a log or HTML, never mixed-direction.
    bundle.set_use_isolating(false);
    // A resource with a syntax error keeps the messages it could read; the test of both
    // catalogues parses them strictly.
    let resource = FluentResource::try_new(text.to_owned()).unwrap_or_else(|(partial, _)| partial);
    let _ = bundle.add_resource(resource);
    bundle
}

/// Arguments for a message, with the types Fluent reads (numbers select English plurals).
pub fn args<'a>(pairs: impl IntoIterator<Item = (&'a str, FluentValue<'a>)>) -> FluentArgs<'a> {
    let mut a = FluentArgs::new();
    for (k, v) in pairs {
        a.set(k, v);
    }
    a
}

/// A message to be written later, in whichever language is asked (a status problem is kept
/// in English in the JSON and shown in the reader's language in the table).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: &'static str,
    pub args: Vec<(&'static str, Arg)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    /// Written with one decimal, the language's way.
    Dec(f64),
}

impl Message {
    pub fn new(id: &'static str) -> Message {
        Message { id, args: Vec::new() }
    }

    pub fn text(mut self, k: &'static str, v: impl Into<String>) -> Message {
        self.args.push((k, Arg::Text(v.into())));
        self
    }

    pub fn int(mut self, k: &'static str, v: impl TryInto<i64>) -> Message {
        self.args.push((k, Arg::Int(v.try_into().unwrap_or(i64::MAX))));
        self
    }

    pub fn dec(mut self, k: &'static str, v: f64) -> Message {
        self.args.push((k, Arg::Dec(v)));
        self
    }

    pub fn write(&self, lang: Lang) -> String {
        let args = args(self.args.iter().map(|(k, v)| {
            let v = match v {
                Arg::Text(s) => FluentValue::from(s.as_str()),
                Arg::Int(n) => FluentValue::from(*n),
                Arg::Dec(x) => FluentValue::from(lang.num(*x, 1)),
            };
            (*k, v)
        }));
        lang.format(self.id, Some(&args))
    }
}

/// `tr!(lang, "message-id", name = value, ...)`: the message in `lang`.
#[macro_export]
macro_rules! tr {
    ($lang:expr, $id:expr) => { $lang.t($id) };
    ($lang:expr, $id:expr, $($k:ident = $v:expr),+ $(,)?) => {
        $lang.format($id, Some(&$crate::i18n::args([$((stringify!($k), fluent_bundle::FluentValue::from($v))),+])))
    };
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use fluent_syntax::ast::{self, Entry, Expression, InlineExpression, PatternElement};
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    /// Every message, with the variables it uses (in its value and its selectors' variants).
    fn messages(text: &str) -> BTreeMap<String, BTreeSet<String>> {
        let resource = fluent_syntax::parser::parse(text).unwrap_or_else(|(_, errors)| {
            panic!("the catalogue does not parse: {errors:?}");
        });
        let mut out = BTreeMap::new();
        for entry in resource.body {
            if let Entry::Message(m) = entry {
                let mut vars = BTreeSet::new();
                if let Some(p) = &m.value {
                    pattern_vars(p, &mut vars);
                }
                assert!(m.value.is_some(), "{} has no value", m.id.name);
                out.insert(m.id.name.to_owned(), vars);
            }
        }
        out
    }

    fn pattern_vars(p: &ast::Pattern<&str>, vars: &mut BTreeSet<String>) {
        for el in &p.elements {
            if let PatternElement::Placeable { expression } = el {
                expression_vars(expression, vars);
            }
        }
    }

    fn expression_vars(e: &Expression<&str>, vars: &mut BTreeSet<String>) {
        match e {
            Expression::Select { selector, variants } => {
                inline_vars(selector, vars);
                for v in variants {
                    pattern_vars(&v.value, vars);
                }
            }
            Expression::Inline(i) => inline_vars(i, vars),
        }
    }

    fn inline_vars(i: &InlineExpression<&str>, vars: &mut BTreeSet<String>) {
        match i {
            InlineExpression::VariableReference { id } => {
                vars.insert(id.name.to_owned());
            }
            InlineExpression::Placeable { expression } => expression_vars(expression, vars),
            InlineExpression::FunctionReference { arguments, .. } => {
                for a in &arguments.positional {
                    inline_vars(a, vars);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn both_catalogues_have_every_message_with_the_same_arguments() {
        let vi = messages(CATALOGUES[0].1);
        let en = messages(CATALOGUES[1].1);
        let only = |a: &BTreeMap<String, _>, b: &BTreeMap<String, _>| {
            a.keys().filter(|k| !b.contains_key(*k)).cloned().collect::<Vec<String>>()
        };
        assert!(only(&en, &vi).is_empty(), "missing in vi.ftl: {:?}", only(&en, &vi));
        assert!(only(&vi, &en).is_empty(), "missing in en.ftl: {:?}", only(&vi, &en));
        for (id, vars) in &en {
            assert_eq!(&vi[id], vars, "{id}: the two languages use different arguments");
        }
        assert!(en.len() > 100, "only {} messages: is the catalogue whole?", en.len());
    }

    #[test]
    fn the_vietnamese_is_nfc_and_uses_the_portals_own_terms() {
        let vi = CATALOGUES[0].1;
        assert_eq!(vi.nfc().collect::<String>(), vi, "vi.ftl is not in NFC");
        for term in ["hồ sơ", "đồng bộ", "tiếp nhận", "trễ hạn", "đúng hạn", "cách ly", "từ chối", "đơn vị"]
        {
            assert!(vi.contains(term), "vi.ftl never says {term:?}");
        }
        // Diacritics present, not stripped to ASCII ("ho so", "dong bo").
        for stripped in [" ho so ", " dong bo ", " tre han "] {
            assert!(!vi.to_lowercase().contains(stripped), "vi.ftl has {stripped:?} without its diacritics");
        }
    }

    #[test]
    fn the_language_is_the_flag_else_the_locale_else_english() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(Lang::of_locale(env(&[("LANG", "vi_VN.UTF-8")])), Lang::Vi);
        assert_eq!(Lang::of_locale(env(&[("LANG", "vi_VN.UTF-8"), ("LC_ALL", "C")])), Lang::En);
        assert_eq!(Lang::of_locale(env(&[("LANG", "en_US"), ("LC_MESSAGES", "vi")])), Lang::Vi);
        assert_eq!(Lang::of_locale(env(&[("LC_ALL", ""), ("LANG", "vi_VN")])), Lang::Vi);
        assert_eq!(Lang::of_locale(env(&[])), Lang::En);
        assert_eq!(Lang::choose(Some(Lang::Vi)), Lang::Vi);
    }

    #[test]
    fn wrapping_keeps_the_label_column_and_commands_whole() {
        let text = "61 bản ghi của tỉnh bị cách ly (chưa gửi); sửa tại nguồn hoặc trong status_map rồi chạy `dvc-sync retry --quarantined`";
        let wrapped = wrap("  ! ", text);
        assert!(wrapped.lines().all(|l| l.chars().count() <= WIDTH), "{wrapped}");
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("    ")), "{wrapped}");
        assert!(wrapped.contains("`dvc-sync"), "a command is not split at its hyphen: {wrapped}");
    }

    #[test]
    fn numbers_and_plurals_read_the_languages_way() {
        assert_eq!(Lang::Vi.percent(Some(0.995)), "99,50 %");
        assert_eq!(Lang::En.percent(Some(0.995)), "99.50 %");
        assert_eq!(Lang::En.percent(None), "N/A");
        assert_eq!(crate::tr!(Lang::En, "count-dossiers", n = 1), "1 dossier");
        assert_eq!(crate::tr!(Lang::En, "count-dossiers", n = 2), "2 dossiers");
        assert_eq!(crate::tr!(Lang::Vi, "count-dossiers", n = 2), "2 hồ sơ");
    }
}
