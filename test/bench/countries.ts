/**
 * Factbook countries the benches ask about (one question per item or request, cycled); not a
 * bench itself, so importing it runs nothing.
 */
export const COUNTRIES: readonly string[] = [
  "Australia",
  "Brazil",
  "Nepal",
  "Canada",
  "France",
  "Japan",
  "Kenya",
  "Peru",
  "Norway",
  "Egypt",
  "India",
  "Chile",
  "Spain",
  "Ghana",
  "Italy",
  "Mexico",
  "Sweden",
  "Turkey",
  "Vietnam",
  "Poland",
];
