//! Automation schedules (spec §9.2): five-field UTC cron, or English converted to cron by a
//! fixed, table-driven parser (no model). Cron is checked field by field here (so every error
//! names what is wrong, and extensions such as `L`, `W`, `#` or `@daily` are refused), then
//! evaluated by the `croner` crate.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use thiserror::Error;

/// A schedule as stored: the cron expression and, when the client wrote English, that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Five-field UTC cron, whitespace collapsed.
    pub cron: String,
    /// The English text as sent, or `None` when the client sent cron.
    pub text: Option<String>,
}

/// Why a schedule was refused; the message is for the client (`param: "schedule"`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ScheduleError> {
    Err(ScheduleError(message.into()))
}

/// Parses `input` (cron or English) and checks it fires no more often than every
/// `min_interval_secs` seconds.
pub fn parse(input: &str, min_interval_secs: u64) -> Result<Schedule, ScheduleError> {
    let collapsed = input.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return err(
            "The schedule is empty; write cron (`0 9 * * 1`) or English (`every monday at 9am`).",
        );
    }
    let looks_like_cron = collapsed
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '*' || c == '@');
    let schedule = if looks_like_cron && !starts_like_time(&collapsed) {
        CronFields::parse(&collapsed)?;
        Schedule {
            cron: collapsed,
            text: None,
        }
    } else {
        Schedule {
            cron: english(&collapsed)?,
            text: Some(input.trim().to_owned()),
        }
    };
    let fields = CronFields::parse(&schedule.cron)?;
    let gap = fields.min_gap_secs();
    if gap < min_interval_secs {
        return err(format!(
            "`{}` fires every {} at times; the minimum interval on this server is {}.",
            schedule.cron,
            describe_secs(gap),
            describe_secs(min_interval_secs)
        ));
    }
    Ok(schedule)
}

/// Whether English text starts with a time (`9am daily` is not cron).
fn starts_like_time(s: &str) -> bool {
    let first = s.split(' ').next().unwrap_or_default().to_ascii_lowercase();
    first.ends_with("am") || first.ends_with("pm") || first.contains(':')
}

fn describe_secs(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} hour(s)", s / 3600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} second(s)"),
    }
}

/// The first time strictly after `after` (Unix seconds) that `cron` (already accepted by
/// [`parse`]) names, in UTC; `None` if it names none (e.g. `0 0 31 2 *`).
pub fn next_after(cron: &str, after: i64) -> Option<i64> {
    // croner is handed the fields as the explicit value lists this module parsed them into:
    // it then agrees with `parse` on every form `parse` accepts (croner refuses some, such as
    // `5/15`, which would otherwise be accepted here and never fire).
    let canonical = CronFields::parse(cron).ok()?.canonical();
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(&canonical)
        .ok()?;
    let start = DateTime::<Utc>::from_timestamp(after, 0)?;
    parsed
        .find_next_occurrence(&start, false)
        .ok()
        .map(|t| t.timestamp())
}

// ---- cron ----

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The five fields as sets of values.
#[derive(Debug)]
struct CronFields {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    days: BTreeSet<u32>,
    months: BTreeSet<u32>,
    /// 0–6, Sunday 0 (a `7` is folded into 0).
    weekdays: BTreeSet<u32>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of the first name (`jan` is 1, `sun` is 0).
    names_from: u32,
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_from: 1,
    },
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
        names_from: 0,
    },
];

impl CronFields {
    fn parse(cron: &str) -> Result<CronFields, ScheduleError> {
        if cron.starts_with('@') {
            return err(
                "Cron nicknames such as `@daily` are not supported; write the five fields (`0 0 * * *`).",
            );
        }
        let parts: Vec<&str> = cron.split(' ').collect();
        if parts.len() != 5 {
            return err(format!(
                "A cron schedule has five fields (minute hour day-of-month month day-of-week); `{cron}` has {}.",
                parts.len()
            ));
        }
        let mut sets = Vec::with_capacity(5);
        for (text, spec) in parts.iter().zip(FIELDS.iter()) {
            sets.push(parse_field(text, spec)?);
        }
        let weekdays: BTreeSet<u32> = sets[4].iter().map(|d| d % 7).collect();
        Ok(CronFields {
            minutes: sets[0].clone(),
            hours: sets[1].clone(),
            days: sets[2].clone(),
            months: sets[3].clone(),
            weekdays,
            days_restricted: parts[2] != "*",
            weekdays_restricted: parts[4] != "*",
        })
    }

    /// The five fields as explicit comma-separated values; an unrestricted day field stays
    /// `*`, so the day-of-month / day-of-week rule is unchanged.
    fn canonical(&self) -> String {
        fn list(values: &BTreeSet<u32>) -> String {
            values
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
        let days = if self.days_restricted {
            list(&self.days)
        } else {
            "*".to_owned()
        };
        let weekdays = if self.weekdays_restricted {
            list(&self.weekdays)
        } else {
            "*".to_owned()
        };
        format!(
            "{} {} {} {} {}",
            list(&self.minutes),
            list(&self.hours),
            days,
            list(&self.months),
            weekdays
        )
    }

    /// Whether the schedule fires on `date` (Vixie semantics: when both day fields are
    /// restricted, either matches).
    fn fires_on(&self, date: NaiveDate) -> bool {
        if !self.months.contains(&date.month()) {
            return false;
        }
        let dom = self.days.contains(&date.day());
        let dow = self
            .weekdays
            .contains(&date.weekday().num_days_from_sunday());
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The shortest gap between two consecutive firings, in seconds: within a day, between
    /// consecutive times; across midnight, when two firing days follow each other (checked
    /// over eight years, which covers every leap-year and weekday combination).
    fn min_gap_secs(&self) -> u64 {
        let times: Vec<u32> = self
            .hours
            .iter()
            .flat_map(|h| self.minutes.iter().map(move |m| h * 60 + m))
            .collect();
        let mut gap = u32::MAX;
        for pair in times.windows(2) {
            gap = gap.min(pair[1] - pair[0]);
        }
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            let overnight = 1440 - last + first;
            if overnight < gap && self.has_consecutive_days() {
                gap = overnight;
            }
        }
        u64::from(gap).saturating_mul(60)
    }

    fn has_consecutive_days(&self) -> bool {
        let Some(start) = NaiveDate::from_ymd_opt(2026, 1, 1) else {
            return true;
        };
        let mut previous = false;
        for day in start.iter_days().take(8 * 366) {
            let fires = self.fires_on(day);
            if fires && previous {
                return true;
            }
            previous = fires;
        }
        false
    }
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<BTreeSet<u32>, ScheduleError> {
    let mut out = BTreeSet::new();
    for item in text.split(',') {
        if item.is_empty() {
            return err(format!(
                "The {} field `{text}` has an empty list item.",
                spec.name
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| {
                    ScheduleError(format!(
                        "The {} field `{text}` has a step `{s}` that is not a number.",
                        spec.name
                    ))
                })?;
                if step == 0 {
                    return err(format!("The {} field `{text}` has a step of 0.", spec.name));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, if spec.max == 7 { 6 } else { spec.max })
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = value(a, spec, text)?;
            let hi = value(b, spec, text)?;
            if lo > hi {
                return err(format!(
                    "The {} field `{text}` has a range `{range}` that runs backwards.",
                    spec.name
                ));
            }
            (lo, hi)
        } else {
            let v = value(range, spec, text)?;
            // `5/15` means from 5 to the end in steps of 15.
            if item.contains('/') {
                (v, if spec.max == 7 { 6 } else { spec.max })
            } else {
                (v, v)
            }
        };
        let mut v = lo;
        while v <= hi {
            out.insert(v);
            v += step;
        }
    }
    Ok(out)
}

fn value(token: &str, spec: &FieldSpec, field: &str) -> Result<u32, ScheduleError> {
    if let Ok(n) = token.parse::<u32>() {
        if n < spec.min || n > spec.max {
            return err(format!(
                "The {} field `{field}` has {n}, outside {}–{}.",
                spec.name, spec.min, spec.max
            ));
        }
        return Ok(n);
    }
    let lower = token.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        return Ok(spec.names_from + i as u32);
    }
    if token
        .chars()
        .any(|c| matches!(c, 'L' | 'W' | '#' | '?' | 'l' | 'w'))
        && spec.names.is_empty()
    {
        return err(format!(
            "The {} field `{field}` uses `{token}`; only numbers, `*`, lists, ranges and steps are supported.",
            spec.name
        ));
    }
    if spec.names.is_empty() {
        err(format!(
            "The {} field `{field}` has `{token}`, which is not a number.",
            spec.name
        ))
    } else {
        err(format!(
            "The {} field `{field}` has `{token}`, which is neither a number nor a name such as `{}`.",
            spec.name, spec.names[1]
        ))
    }
}

// ---- English ----

fn weekday_number(word: &str) -> Option<u32> {
    let w = word.trim_end_matches(',');
    let w = w.strip_suffix('s').filter(|s| s.len() >= 3).unwrap_or(w);
    Some(match w {
        "sunday" | "sun" => 0,
        "monday" | "mon" => 1,
        "tuesday" | "tue" | "tues" => 2,
        "wednesday" | "wed" => 3,
        "thursday" | "thu" | "thur" | "thurs" => 4,
        "friday" | "fri" => 5,
        "saturday" | "sat" => 6,
        _ => return None,
    })
}

/// Converts English (spec §9.2) to cron.
fn english(text: &str) -> Result<String, ScheduleError> {
    let lower = text.to_ascii_lowercase();
    let mut words: Vec<&str> = lower.split(' ').collect();
    // A trailing `utc`/`gmt` is allowed; any other zone is refused.
    if let Some(last) = words.last() {
        if *last == "utc" || *last == "gmt" {
            words.pop();
        } else if is_time_zone(last) {
            return err(format!(
                "Schedules are in UTC; `{last}` is a time zone. Convert the time to UTC (you may write `utc`)."
            ));
        }
    }
    // Split off `at <time>`.
    let (head, time) = match words.iter().position(|w| *w == "at") {
        Some(i) => {
            let rest = &words[i + 1..];
            if rest.is_empty() {
                return err(
                    "`at` must be followed by a time, e.g. `at 9am`, `at 17:30`, `at noon`.",
                );
            }
            let t = parse_time(&rest.join(" "))?;
            (&words[..i], Some(t))
        }
        None => (&words[..], None),
    };
    let (minute, hour) = time.unwrap_or((0, 0));
    let no_time = |what: &str| -> Result<(), ScheduleError> {
        if time.is_some() {
            err(format!("`{what}` cannot take a time with `at`."))
        } else {
            Ok(())
        }
    };
    match head {
        [] => err("Say how often, e.g. `daily at 9am` or `every monday at 9am`."),
        ["every", "minute"] => {
            no_time("every minute")?;
            Ok("* * * * *".to_owned())
        }
        ["every", n, unit] if unit.starts_with("minute") => {
            no_time("every N minutes")?;
            let n = count(
                n,
                1,
                59,
                "minutes",
                "Use `every N hours` for 60 minutes or more.",
            )?;
            Ok(if n == 1 {
                "* * * * *".to_owned()
            } else {
                format!("*/{n} * * * *")
            })
        }
        ["hourly"] | ["every", "hour"] => {
            no_time("hourly")?;
            Ok("0 * * * *".to_owned())
        }
        ["every", n, unit] if unit.starts_with("hour") => {
            no_time("every N hours")?;
            let n = count(n, 1, 23, "hours", "Use `daily` for 24 hours.")?;
            Ok(if n == 1 {
                "0 * * * *".to_owned()
            } else {
                format!("0 */{n} * * *")
            })
        }
        ["daily"] | ["every", "day"] => Ok(format!("{minute} {hour} * * *")),
        ["every", "weekday"] | ["weekdays"] | ["every", "weekdays"] => {
            Ok(format!("{minute} {hour} * * 1-5"))
        }
        ["every", "weekend"] | ["weekends"] | ["every", "weekend", "day"] => {
            Ok(format!("{minute} {hour} * * 0,6"))
        }
        ["every", "month", "on", "the", day] | ["monthly", "on", "the", day] => {
            let d = ordinal(day)?;
            Ok(format!("{minute} {hour} {d} * *"))
        }
        ["monthly"] | ["every", "month"] => Ok(format!("{minute} {hour} 1 * *")),
        ["weekly"] | ["every", "week"] => err("Say which day, e.g. `weekly on monday at 9am`."),
        ["every", rest @ ..] | ["weekly", "on", rest @ ..] | ["on", rest @ ..]
            if !rest.is_empty() =>
        {
            let days = weekday_list(rest)?;
            Ok(format!("{minute} {hour} * * {days}"))
        }
        ["every", ..] => err("Say what to repeat, e.g. `every day`, `every 15 minutes`."),
        _ => err(format!(
            "Could not read the schedule `{text}`. Write cron (`0 9 * * 1`) or English such as `every 15 minutes`, `daily at 9am`, `every monday and thursday at 17:30`, `monthly on the 1st at 8am`."
        )),
    }
}

fn is_time_zone(word: &str) -> bool {
    const ZONES: [&str; 20] = [
        "est", "edt", "cst", "cdt", "mst", "mdt", "pst", "pdt", "cet", "cest", "bst", "ist", "jst",
        "aest", "eet", "eest", "wet", "hst", "akst", "local",
    ];
    ZONES.contains(&word)
        || word.contains('/')
        || (word.len() > 3
            && (word.starts_with("utc+")
                || word.starts_with("utc-")
                || word.starts_with("gmt+")
                || word.starts_with("gmt-")))
}

fn count(word: &str, min: u32, max: u32, unit: &str, hint: &str) -> Result<u32, ScheduleError> {
    match word.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) if n > max => err(format!("`every {n} {unit}` is too long a step. {hint}")),
        Ok(n) => err(format!(
            "`every {n} {unit}`: the number must be at least {min}."
        )),
        Err(_) => err(format!(
            "`{word}` is not a number; write e.g. `every 15 {unit}`."
        )),
    }
}

fn ordinal(word: &str) -> Result<u32, ScheduleError> {
    let digits = word
        .strip_suffix("st")
        .or_else(|| word.strip_suffix("nd"))
        .or_else(|| word.strip_suffix("rd"))
        .or_else(|| word.strip_suffix("th"))
        .unwrap_or(word);
    match digits.parse::<u32>() {
        Ok(d) if (1..=31).contains(&d) => Ok(d),
        Ok(d) => err(format!(
            "A month has days 1 to 31; `the {word}` ({d}) is not one."
        )),
        Err(_) => err(format!(
            "`the {word}` is not a day of the month; write e.g. `the 1st` or `the 15th`."
        )),
    }
}

fn weekday_list(words: &[&str]) -> Result<String, ScheduleError> {
    let mut days = BTreeSet::new();
    for w in words {
        let w = w.trim_end_matches(',');
        if w == "and" || w.is_empty() {
            continue;
        }
        match weekday_number(w) {
            Some(d) => {
                days.insert(d);
            }
            None => {
                return err(format!(
                    "`{w}` is not a day of the week (monday … sunday), nor a known schedule word."
                ));
            }
        }
    }
    if days.is_empty() {
        return err("Name at least one day of the week.");
    }
    Ok(days
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

/// `9am`, `9 am`, `9:30pm`, `09:00`, `17:30`, `noon`, `midnight` → (minute, hour).
fn parse_time(text: &str) -> Result<(u32, u32), ScheduleError> {
    let t = text.replace(' ', "");
    match t.as_str() {
        "noon" | "midday" => return Ok((0, 12)),
        "midnight" => return Ok((0, 0)),
        _ => {}
    }
    let bad = || {
        ScheduleError(format!(
            "`{text}` is not a time; write e.g. `9am`, `9:30pm`, `09:00`, `17:30`, `noon` or `midnight`."
        ))
    };
    let (body, meridiem) = if let Some(b) = t.strip_suffix("am") {
        (b, Some(false))
    } else if let Some(b) = t.strip_suffix("pm") {
        (b, Some(true))
    } else {
        (t.as_str(), None)
    };
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => {
            if m.len() != 2 {
                return Err(bad());
            }
            (h, m.parse::<u32>().map_err(|_| bad())?)
        }
        None => {
            if meridiem.is_none() {
                // A bare number is ambiguous (9 or 21?).
                return err(format!(
                    "`{text}` is ambiguous; write `9am`, `9pm` or `21:00`."
                ));
            }
            (body, 0)
        }
    };
    if h.is_empty() || h.len() > 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    if m > 59 {
        return err(format!("`{text}`: minutes run from 00 to 59."));
    }
    let hour = match meridiem {
        Some(pm) => {
            if !(1..=12).contains(&h) {
                return err(format!("`{text}`: with am/pm the hour runs from 1 to 12."));
            }
            match (h, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, false) => h,
                (h, true) => h + 12,
            }
        }
        None => {
            if h > 23 {
                return err(format!("`{text}`: hours run from 00 to 23."));
            }
            h
        }
    };
    Ok((m, hour))
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// [`parse`] with the default minimum interval (one minute).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s, 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    /// Every row of spec §9.2, and more forms the parser accepts.
    #[test]
    fn english_table() {
        let table = [
            ("every minute", "* * * * *"),
            ("every 15 minutes", "*/15 * * * *"),
            ("hourly", "0 * * * *"),
            ("every hour", "0 * * * *"),
            ("every 2 hours", "0 */2 * * *"),
            ("daily at 9am", "0 9 * * *"),
            ("every day at 09:00", "0 9 * * *"),
            ("every weekday at 8:30am", "30 8 * * 1-5"),
            ("every weekend at noon", "0 12 * * 0,6"),
            ("every monday at 9am", "0 9 * * 1"),
            ("weekly on monday at 9am", "0 9 * * 1"),
            ("every monday and thursday at 17:30", "30 17 * * 1,4"),
            ("every month on the 1st at 8am", "0 8 1 * *"),
            ("monthly on the 15th", "0 0 15 * *"),
            // Case, spacing, zones, other time forms.
            ("Every  Monday AT 9AM", "0 9 * * 1"),
            ("daily at 9:30pm utc", "30 21 * * *"),
            ("daily at midnight GMT", "0 0 * * *"),
            ("daily", "0 0 * * *"),
            ("every day at 12am", "0 0 * * *"),
            ("every day at 12pm", "0 12 * * *"),
            ("every day at 9 pm", "0 21 * * *"),
            ("every tuesday, friday and sunday at 07:05", "5 7 * * 0,2,5"),
            ("every 1 minute", "* * * * *"),
            ("every 1 hour", "0 * * * *"),
            ("monthly on the 2nd at noon", "0 12 2 * *"),
            ("every month on the 31st", "0 0 31 * *"),
            ("every mondays at 9am", "0 9 * * 1"),
        ];
        for (text, cron) in table {
            let s = parse(text, 60).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.cron, cron, "{text}");
            assert_eq!(s.text.as_deref(), Some(text.trim()), "{text}");
        }
    }

    #[test]
    fn cron_is_stored_as_given_with_whitespace_collapsed() {
        for (input, stored) in [
            ("0 9 * * 1", "0 9 * * 1"),
            ("  0   9 *  * 1 ", "0 9 * * 1"),
            (
                "*/5 1-3,7 1,15 jan-mar MON-fri",
                "*/5 1-3,7 1,15 jan-mar MON-fri",
            ),
            ("0 0 * * 7", "0 0 * * 7"),
            ("0 0 * * 0", "0 0 * * 0"),
            ("5/15 * * * *", "5/15 * * * *"),
        ] {
            let s = parse(input, 60).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((s.cron.as_str(), s.text), (stored, None));
        }
    }

    /// At least twenty refusals, each with the message a client sees.
    #[test]
    fn refusals_say_what_is_wrong() {
        let table: [(&str, &str); 30] = [
            ("", "empty"),
            ("   ", "empty"),
            ("every 0 minutes", "at least 1"),
            ("every 60 minutes", "too long a step"),
            ("every 24 hours", "too long a step"),
            ("every x minutes", "is not a number"),
            ("daily at 25:00", "hours run from 00 to 23"),
            ("daily at 9:60", "minutes run from 00 to 59"),
            ("daily at 13pm", "from 1 to 12"),
            ("daily at 9", "ambiguous"),
            ("daily at 9am est", "time zone"),
            ("daily at 9am europe/paris", "time zone"),
            ("daily at", "must be followed by a time"),
            ("every funday", "not a day of the week"),
            ("monthly on the 32nd", "1 to 31"),
            ("every month on the 0th", "1 to 31"),
            ("monthly on the first", "not a day of the month"),
            ("weekly", "which day"),
            ("every minute at 9am", "cannot take a time"),
            ("tomorrow at 9am", "Could not read"),
            ("every", "Say what to repeat"),
            ("* * * *", "five fields"),
            ("* * * * * *", "five fields"),
            ("60 * * * *", "outside 0–59"),
            ("* 24 * * *", "outside 0–23"),
            ("* * 0 * *", "outside 1–31"),
            ("* * * 13 *", "outside 1–12"),
            ("* * * * 8", "outside 0–7"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
        ];
        for (text, needle) in table {
            let e = parse(text, 60).expect_err(text);
            assert!(e.0.contains(needle), "{text:?}: {e}");
        }
        for (text, needle) in [
            ("1,,2 * * * *", "empty list item"),
            ("@daily", "nicknames"),
            ("0 0 L * *", "only numbers"),
            ("0 0 * * mon#2", "neither a number nor a name"),
            ("0 0 * foo *", "neither a number nor a name"),
        ] {
            let e = parse(text, 60).expect_err(text);
            assert!(e.0.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_minimum_interval_is_enforced() {
        let five = 300;
        assert!(
            parse("every minute", five)
                .unwrap_err()
                .0
                .contains("minimum interval")
        );
        assert!(parse("*/4 * * * *", five).is_err());
        assert!(parse("every 5 minutes", five).is_ok());
        assert!(parse("58 23 * * *", five).is_ok());
        assert!(parse("58,59 23 * * *", five).is_err());
        // 23:59 then 00:00 the next day is one minute apart, when days follow each other.
        assert!(parse("0,59 0,23 * * *", five).is_err());
        assert!(parse("0,59 0,23 * * 1,3", five).is_ok());
    }

    #[test]
    fn next_times_are_utc_and_sunday_is_0_or_7() {
        let after = at("2026-06-11T21:20:10Z"); // a Thursday
        assert_eq!(
            next_after("0 9 * * 1", after),
            Some(at("2026-06-15T09:00:00Z"))
        );
        assert_eq!(
            next_after("0 9 * * 7", after),
            next_after("0 9 * * 0", after)
        );
        assert_eq!(
            next_after("0 9 * * 7", after),
            Some(at("2026-06-14T09:00:00Z"))
        );
        assert_eq!(
            next_after("0 9 * * sun", after),
            Some(at("2026-06-14T09:00:00Z"))
        );
        assert_eq!(
            next_after("*/15 * * * *", after),
            Some(at("2026-06-11T21:30:00Z"))
        );
        // Strictly after.
        assert_eq!(
            next_after("30 21 * * *", at("2026-06-11T21:30:00Z")),
            Some(at("2026-06-12T21:30:00Z"))
        );
        assert_eq!(
            next_after("0 8 1 * *", after),
            Some(at("2026-07-01T08:00:00Z"))
        );
        // Both day fields restricted: either matches (Vixie).
        assert_eq!(
            next_after("0 0 1 * mon", at("2026-06-11T00:00:00Z")),
            Some(at("2026-06-15T00:00:00Z"))
        );
    }

    #[test]
    fn every_accepted_step_and_name_form_has_a_next_time() {
        // 2026-01-05 08:00:00 UTC, a Monday.
        let after = 1_767_600_000;
        for (cron, want) in [
            // `5/15` is 5-59/15: the next is 08:05.
            ("5/15 * * * *", after + 5 * 60),
            ("5-59/15 * * * *", after + 5 * 60),
            ("0 9-17/4 * * *", after + 3600),
            ("0 0 1 feb-mar/1 *", 1_769_904_000),
            ("30 8 * * mon-fri/2", after + 30 * 60),
            ("0 12 15 * tue", after + 4 * 3600 + 86_400),
        ] {
            assert_eq!(next_after(cron, after), Some(want), "{cron}");
        }
    }
}
