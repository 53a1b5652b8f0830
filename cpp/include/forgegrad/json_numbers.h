// Decoding the numeric arrays of JSON request bodies (forgegrad serve) straight into doubles.
//
// A predict request for a small model is mostly its JSON body: a generic parser makes one Python
// float per number and numpy then walks that nested list twice (dtype discovery, then conversion).
// parse_number_array reads one JSON array of numbers in a single pass, and gives up (returns
// false) on anything it does not take exactly as the generic path would, so that path still
// decides, and words the error for, every other body.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fg::json {

constexpr int kMaxArrayDims = 32;

struct NumberArray {
  std::vector<int64_t> shape;  // one entry per nesting level, every entry >= 1
  std::vector<double> values;  // row-major
};

// Parses text[0, size) as exactly one JSON array (JSON whitespace around it allowed) that is
// rectangular, at most kMaxArrayDims deep, has no empty level, and whose leaves are JSON numbers.
// Each number is the double that Python's float() gives for it (correctly rounded); an integer
// literal is taken only up to 15 digits (exact in a double; "-0" gives +0.0, as a Python int).
// Returns false, with out unspecified, for anything else: other JSON values, ragged or empty
// arrays, malformed text, numbers outside the range of a double (or denormal), trailing text.
bool parse_number_array(const char* text, std::size_t size, NumberArray& out);

}  // namespace fg::json
