//! `weekdayRange`, `dateRange` and `timeRange`: the PAC helpers that read the wall clock,
//! with the semantics of Netscape's definitions as pacparser (the reference) runs them,
//! quirks included: no range wraps (`weekdayRange("FRI", "MON")` holds on no day, a time
//! range past midnight at no time), and dates overflow the way JavaScript's `Date` setters
//! do. The clock is a trait so tests fix it.

/// A moment as its calendar fields: what JavaScript's `Date` getters answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 0 = January, as `getMonth()`.
    pub month: i64,
    /// 1..=31, as `getDate()`.
    pub day: i64,
    /// 0 = Sunday, as `getDay()`.
    pub weekday: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl Civil {
    /// Seconds since 1970-01-01 of these fields, out-of-range ones carried over as
    /// JavaScript's `MakeDay`/`MakeTime` do (day 0 is the last day of the month before).
    fn seconds(&self) -> i64 {
        let year = self.year + self.month.div_euclid(12);
        let month = self.month.rem_euclid(12);
        let days = days_from_civil(year, month + 1, 1) + self.day - 1;
        days * 86_400 + self.hour * 3_600 + self.minute * 60 + self.second
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where the time helpers read "now".
pub trait Clock {
    /// The local time and the UTC time of the same moment.
    fn now(&self) -> (Civil, Civil);
}

/// The system clock in the process's time zone (`TZ`, else `/etc/localtime`).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> (Civil, Civil) {
        use chrono::{Datelike, Timelike};
        fn civil<T: Datelike + Timelike>(t: &T) -> Civil {
            Civil {
                year: i64::from(t.year()),
                month: i64::from(t.month0()),
                day: i64::from(t.day()),
                weekday: i64::from(t.weekday().num_days_from_sunday()),
                hour: i64::from(t.hour()),
                minute: i64::from(t.minute()),
                second: i64::from(t.second()),
            }
        }
        let now = chrono::Utc::now();
        (civil(&now.with_timezone(&chrono::Local)), civil(&now))
    }
}

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// The arguments without a trailing `"GMT"`, and whether it was there.
fn split_gmt(args: &[String]) -> (&[String], bool) {
    match args.split_last() {
        Some((last, rest)) if last == "GMT" => (rest, true),
        _ => (args, false),
    }
}

/// JavaScript's `parseInt(s)`: optional sign and leading decimal digits after whitespace.
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    let value: i64 = digits[..end].parse().ok()?;
    Some(if negative { -value } else { value })
}

/// JavaScript's `Number(s)` truncated to an integer (what `setHours` and `==` make of a
/// string argument); `None` for NaN.
fn to_integer(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    let value: f64 = s.parse().ok()?;
    value.is_finite().then_some(value.trunc() as i64)
}

/// Whether `now` lies in `[from, to]`; a range whose end comes first holds nothing.
fn within(from: i64, now: i64, to: i64) -> bool {
    from <= now && now <= to
}

/// `weekdayRange(wd1 [, wd2] [, "GMT"])`.
pub fn weekday_range(args: &[String], clock: &dyn Clock) -> bool {
    let (args, gmt) = split_gmt(args);
    let day = |name: &String| WEEKDAYS.iter().position(|d| d == name).map(|i| i as i64);
    let Some(first) = args.first() else {
        return false;
    };
    let (local, utc) = clock.now();
    let today = if gmt { utc.weekday } else { local.weekday };
    let last = if args.len() == 2 { &args[1] } else { first };
    match (day(first), day(last)) {
        (Some(from), Some(to)) => within(from, today, to),
        _ => false,
    }
}

/// `dateRange(...)`: a day, month or year alone, or a range of day/month/year fields.
pub fn date_range(args: &[String], clock: &dyn Clock) -> bool {
    let (args, gmt) = split_gmt(args);
    if args.is_empty() {
        return false;
    }
    let month = |name: &str| MONTHS.iter().position(|m| *m == name).map_or(-1, |i| i as i64);
    let (local, utc) = clock.now();
    let now = if gmt { utc } else { local };
    if let [only] = args {
        return match parse_int(only) {
            None => now.month == month(only),
            Some(day) if day < 32 => now.day == day,
            Some(year) => now.year == year,
        };
    }
    // The reference builds both ends in the local year, even for GMT.
    let mut from = Civil {
        month: 0,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        ..local
    };
    let mut to = Civil {
        month: 11,
        day: 31,
        hour: 23,
        minute: 59,
        second: 59,
        ..local
    };
    let half = args.len() / 2;
    let mut day_only = false;
    let apply = |end: &mut Civil, arg: &str, day_only: &mut bool, first_half: bool| match parse_int(arg) {
        None => end.month = month(arg),
        Some(day) if day < 32 => {
            if first_half {
                *day_only = args.len() <= 2;
            }
            end.day = day;
        }
        Some(year) => end.year = year,
    };
    for arg in &args[..half] {
        apply(&mut from, arg, &mut day_only, true);
    }
    for arg in &args[half..] {
        apply(&mut to, arg, &mut day_only, false);
    }
    if day_only {
        from.month = local.month;
        to.month = local.month;
    }
    within(from.seconds(), now.seconds(), to.seconds())
}

/// Why `timeRange` threw: the reference throws on a count of arguments it does not take.
#[derive(Debug, PartialEq, Eq)]
pub struct BadArgumentCount;

/// `timeRange(...)`: an hour, an hour range, or ranges of hour/minute(/second).
pub fn time_range(args: &[String], clock: &dyn Clock) -> Result<bool, BadArgumentCount> {
    let (args, gmt) = split_gmt(args);
    let (local, utc) = clock.now();
    let now = if gmt { utc } else { local };
    let of_day = |h: i64, m: i64, s: i64| h * 3_600 + m * 60 + s;
    let number = |i: usize| to_integer(&args[i]);
    let bounds = match args.len() {
        0 => return Ok(false),
        1 => return Ok(number(0) == Some(now.hour)),
        2 => {
            return Ok(match (number(0), number(1)) {
                (Some(from), Some(to)) => from <= now.hour && now.hour <= to,
                _ => false,
            })
        }
        // Four arguments keep the current second on the start and end at second 59.
        4 => (number(0), number(1), Some(now.second), number(2), number(3), Some(59)),
        6 => (number(0), number(1), number(2), number(3), number(4), number(5)),
        _ => return Err(BadArgumentCount),
    };
    let (Some(h1), Some(m1), Some(s1), Some(h2), Some(m2), Some(s2)) = bounds else {
        // An invalid Date compares false both ways.
        return Ok(false);
    };
    Ok(within(
        of_day(h1, m1, s1),
        of_day(now.hour, now.minute, now.second),
        of_day(h2, m2, s2),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock stopped at a local time, with UTC `offset_hours` behind it.
    pub struct Fixed(pub Civil, pub i64);

    impl Clock for Fixed {
        fn now(&self) -> (Civil, Civil) {
            let mut utc = self.0;
            utc.hour -= self.1;
            // Normalise through seconds so the day rolls over like a real clock.
            let secs = utc.seconds();
            let days = secs.div_euclid(86_400);
            let rem = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            utc = Civil {
                year: y,
                month: m - 1,
                day: d,
                weekday: (days + 4).rem_euclid(7),
                hour: rem / 3_600,
                minute: rem % 3_600 / 60,
                second: rem % 60,
            };
            (self.0, utc)
        }
    }

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    /// Wednesday 2026-06-17 14:30:15 local, two hours ahead of UTC.
    fn clock() -> Fixed {
        Fixed(
            Civil {
                year: 2026,
                month: 5,
                day: 17,
                weekday: 3,
                hour: 14,
                minute: 30,
                second: 15,
            },
            2,
        )
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_fixed_clock_knows_its_utc_day() {
        let (_, utc) = clock().now();
        assert_eq!((utc.day, utc.hour, utc.weekday), (17, 12, 3));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn weekday_ranges() {
        let c = clock();
        for (list, expected) in [
            (&["WED"][..], true),
            (&["MON", "FRI"], true),
            (&["THU", "TUE"], false),
            (&["FRI", "WED"], false),
            (&["SAT", "SUN"], false),
            (&["wed"], false),
            (&["MON", "FRI", "GMT"], true),
            (&["WED", "GMT"], true),
            (&["XYZ"], false),
            (&[], false),
        ] {
            assert_eq!(weekday_range(&args(list), &c), expected, "{list:?}");
        }
    }

    #[test]
    fn date_ranges() {
        let c = clock();
        for (list, expected) in [
            (&["17"][..], true),
            (&["18"], false),
            (&["JUN"], true),
            (&["JUL"], false),
            (&["2026"], true),
            (&["2025"], false),
            (&["1", "15"], false),
            (&["15", "20"], true),
            (&["MAY", "JUL"], true),
            (&["JUL", "MAY"], false),
            (&["NOV", "FEB"], false),
            (&["1", "JUN", "30", "JUN"], true),
            (&["18", "JUN", "16", "JUN"], false),
            (&["1", "JAN", "2026", "31", "DEC", "2026"], true),
            (&["JUN", "2025", "JUN", "2026"], true),
            (&["2027", "2030"], false),
            (&["17", "GMT"], true),
            (&["JUN", "GMT"], true),
        ] {
            assert_eq!(date_range(&args(list), &c), expected, "{list:?}");
        }
    }

    #[test]
    fn time_ranges() {
        let c = clock();
        for (list, expected) in [
            (&["14"][..], true),
            (&["15"], false),
            (&["9", "17"], true),
            (&["15", "17"], false),
            // Two hours do not wrap past midnight in the reference.
            (&["22", "15"], false),
            (&["12", "GMT"], true),
            (&["14", "30", "14", "30"], true),
            (&["14", "31", "15", "00"], false),
            (&["22", "0", "14", "30"], false),
            (&["14", "30", "16", "14", "30", "14"], false),
            (&["14", "30", "15", "14", "30", "15"], true),
            (&["0", "0", "0", "23", "59", "59"], true),
            (&["x", "17"], false),
        ] {
            assert_eq!(time_range(&args(list), &c), Ok(expected), "{list:?}");
        }
        assert_eq!(time_range(&args(&["1", "2", "3"]), &c), Err(BadArgumentCount));
    }

    /// Chromium's `pac_library_unittest.js` vectors, on its mock dates (local time = UTC),
    /// where pacparser agrees with them.
    #[test]
    fn chromium_pac_library_vectors() {
        let at = |year, month, day, weekday, hour, minute, second| {
            Fixed(
                Civil {
                    year,
                    month,
                    day,
                    weekday,
                    hour,
                    minute,
                    second,
                },
                0,
            )
        };
        // Tue Mar 03 2009.
        let c = at(2009, 2, 3, 2, 0, 0, 0);
        let week = |list: &[&str]| weekday_range(&args(list), &c);
        assert!(week(&["MON", "FRI"]) && week(&["TUE", "FRI"]) && week(&["TUE", "TUE"]) && week(&["TUE"]));
        assert!(!week(&["WED", "FRI"]) && !week(&["SUN", "MON"]) && !week(&["SAT"]) && !week(&["FRI", "MON"]));
        assert!(weekday_range(&args(&["MON", "FRI", "GMT"]), &c) && weekday_range(&args(&["TUE", "GMT"]), &c));
        assert!(!weekday_range(&args(&["SAT", "GMT"]), &c));

        let date = |list: &[&str], c: &Fixed| date_range(&args(list), c);
        assert!(date(&["3"], &c) && !date(&["1"], &c));
        assert!(date(&["3", "GMT"], &c) && !date(&["1", "GMT"], &c));
        assert!(date(&["1", "4"], &c) && !date(&["4", "20"], &c));
        assert!(date(&["3", "MAR"], &c));
        assert!(date(&["3", "MAR"], &at(2014, 2, 3, 1, 0, 0, 0)));
        assert!(date(&["3", "MAR", "2009"], &c));
        // Chromium expects false for these two; pacparser (the reference here, checked with a
        // mocked Date) reads three arguments as a start day in January and an end month and
        // year, so both hold on Mar 03 2009.
        assert!(date(&["4", "MAR", "2009"], &c) && date(&["3", "FEB", "2009"], &c));
        assert!(!date(&["3", "MAR", "2009"], &at(2014, 2, 3, 1, 0, 0, 0)));
        assert!(date(&["JAN", "MAR"], &c) && date(&["MAR", "APR"], &c) && !date(&["MAY", "SEP"], &c));
        assert!(date(&["1", "JAN", "3", "MAR"], &c) && date(&["3", "MAR", "4", "SEP"], &c));
        assert!(!date(&["4", "MAR", "4", "SEP"], &c));
        assert!(date(&["FEB", "2009", "MAR", "2009"], &c));
        let april = at(2009, 3, 3, 5, 0, 0, 0);
        assert!(date(&["FEB", "2009", "MAR", "2010"], &april) && !date(&["FEB", "2009", "MAR", "2009"], &april));
        assert!(date(&["1", "JAN", "2009", "3", "MAR", "2009"], &c));
        assert!(date(&["3", "MAR", "2009", "4", "SEP", "2009"], &c));
        assert!(date(&["3", "JAN", "2009", "4", "FEB", "2010"], &c));
        assert!(!date(&["4", "MAR", "2009", "4", "SEP", "2009"], &c));

        // Mar 03 2009 03:34:01, then 03:34:14.
        let c = at(2009, 2, 3, 2, 3, 34, 1);
        let time = |list: &[&str], c: &Fixed| time_range(&args(list), c).unwrap();
        assert!(time(&["3"], &c) && !time(&["2"], &c));
        assert!(time(&["2", "3"], &c) && time(&["2", "4"], &c) && time(&["3", "5"], &c));
        assert!(!time(&["1", "2"], &c) && !time(&["11", "12"], &c));
        assert!(
            time(&["1", "0", "3", "34"], &c) && time(&["1", "0", "3", "35"], &c) && time(&["3", "34", "5", "0"], &c)
        );
        assert!(!time(&["1", "0", "3", "0"], &c) && !time(&["11", "0", "16", "0"], &c));
        let c = at(2009, 2, 3, 2, 3, 34, 14);
        assert!(time(&["1", "0", "0", "3", "34", "14"], &c) && !time(&["1", "0", "0", "3", "34", "0"], &c));
        assert!(time(&["1", "0", "0", "3", "35", "0"], &c) && time(&["3", "34", "0", "5", "0", "0"], &c));
        assert!(!time(&["1", "0", "0", "3", "0", "0"], &c) && !time(&["11", "0", "0", "16", "0", "0"], &c));
    }

    #[test]
    fn javascript_number_parsing() {
        assert_eq!(parse_int(" 12abc"), Some(12));
        assert_eq!(parse_int("JAN"), None);
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(to_integer("9.7"), Some(9));
        assert_eq!(to_integer("9x"), None);
        assert_eq!(to_integer(""), Some(0));
    }
}
