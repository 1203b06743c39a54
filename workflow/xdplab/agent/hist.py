"""A bounded log-linear histogram of non-negative integers (HdrHistogram-like).

Values below 2 * SUB (2048) have a bucket each; above, every power-of-two
range [2^k, 2^(k+1)) is split into SUB = 1024 equal buckets.  A bucket's
width is at most 1/1024 of its lowest value, so any value is known to within
0.1 %: 3 significant decimal digits.  Storage is a dict of non-empty buckets:
at most 1024 * 54 entries for 64-bit values, whatever the number of samples.
Count, min, max and sum are exact.

Percentiles are by nearest rank (the smallest recorded value with at least
p % of the samples at or below it), reported as that value's bucket's
highest value, so a reported percentile is never below the true one and at
most 0.1 % above it.
"""

import math
from fractions import Fraction

SUB_BITS = 10
SUB = 1 << SUB_BITS                  # buckets per power of two
EXACT_BELOW = 2 * SUB                # values below are their own bucket
SIGNIFICANT_DIGITS = 3
MAX_VALUE = (1 << 63) - 1
DESCRIPTION = ("log-linear buckets (HdrHistogram-like): exact below %d, then %d buckets "
               "per power of two; relative error <= 1/%d (3 significant digits); "
               "percentiles by nearest rank, reported as the bucket's highest value"
               % (EXACT_BELOW, SUB, SUB))


def bucket_index(v):
    if v < EXACT_BELOW:
        return v
    shift = v.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (v >> shift)


def bucket_bounds(i):
    """(lowest, highest) value of bucket i."""
    if i < EXACT_BELOW:
        return i, i
    shift = (i >> SUB_BITS) - 1
    low = (i - (shift << SUB_BITS)) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    __slots__ = ("counts", "count", "min", "max", "sum", "out_of_range")

    def __init__(self):
        self.counts = {}
        self.count = 0
        self.min = None
        self.max = None
        self.sum = 0
        self.out_of_range = 0      # negative or above MAX_VALUE: counted, not recorded

    def record(self, v):
        if v < 0 or v > MAX_VALUE:
            self.out_of_range += 1
            return
        i = v if v < EXACT_BELOW else bucket_index(v)
        c = self.counts
        c[i] = c.get(i, 0) + 1
        self.count += 1
        self.sum += v
        if self.min is None or v < self.min:
            self.min = v
        if self.max is None or v > self.max:
            self.max = v

    def percentile(self, pct):
        if not self.count:
            return None
        rank = max(1, math.ceil(Fraction(str(pct)) * self.count / 100))   # exact, no float
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(bucket_bounds(i)[1], self.max)
        return self.max

    def buckets(self):
        """Sparse: [[lowest, highest, count], ...] of the non-empty buckets, ascending."""
        return [list(bucket_bounds(i)) + [self.counts[i]] for i in sorted(self.counts)]

    def summary(self, percentiles=(50, 90, 99, 99.9)):
        out = {"count": self.count}
        for p in percentiles:
            out["p" + ("%g" % p).replace(".", "")] = self.percentile(p)
        out.update({"min": self.min, "max": self.max,
                    "mean": round(self.sum / self.count, 1) if self.count else None,
                    "out_of_range": self.out_of_range,
                    "precision": "%d significant digits (relative error <= 1/%d)"
                                 % (SIGNIFICANT_DIGITS, SUB),
                    "histogram": {"scheme": "log-linear", "exact_below": EXACT_BELOW,
                                  "buckets_per_octave": SUB,
                                  "buckets": self.buckets()}})
        return out
