// Office hours go through the office proxy, nights and weekends straight through the tunnel;
// the results name which rules held, so every range helper is compared on the same clock.
function FindProxyForURL(url, host) {
  var held = [];
  var rules = [
    ["weekdays", weekdayRange("MON", "FRI")],
    ["weekend", weekdayRange("SAT", "SUN")],
    ["wrap", weekdayRange("FRI", "MON")],
    ["gmt-day", weekdayRange("MON", "FRI", "GMT")],
    ["one-day", weekdayRange("WED")],
    ["bad-day", weekdayRange("Funday")],
    ["hours", timeRange(8, 18)],
    ["hour", timeRange(12)],
    ["night", timeRange(22, 6)],
    ["gmt-hours", timeRange(0, 12, "GMT")],
    ["minutes", timeRange(8, 30, 17, 45)],
    ["minutes-wrap", timeRange(22, 0, 5, 30)],
    ["seconds", timeRange(0, 0, 0, 23, 59, 59)],
    ["december", dateRange("DEC")],
    ["first-half", dateRange("JAN", "JUN")],
    ["winter", dateRange("NOV", "FEB")],
    ["this-year", dateRange(2026)],
    ["day", dateRange(7)],
    ["days", dateRange(1, 15)],
    ["span", dateRange(1, "DEC", 31, "DEC")],
    ["years", dateRange("JAN", 2020, "DEC", 2030)],
    ["full", dateRange(1, "JAN", 2026, 31, "DEC", 2026)],
    ["gmt-month", dateRange("DEC", "GMT")]
  ];
  for (var i = 0; i < rules.length; i++) {
    if (rules[i][1]) held.push(rules[i][0]);
  }
  var route = (weekdayRange("MON", "FRI") && timeRange(8, 18)) ? "PROXY office.example:3128" : "TUNNEL";
  return route + "; DIRECT " + host + " " + held.join(",");
}
