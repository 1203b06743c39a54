"""A bounded log-linear histogram of non-negative integers (HdrHistogram-like).

Values below 2 * SUB (2048) have a bucket each; above, every power-of-two
range [2^k, 2^(k+1)) is split into SUB = 1024 equal buckets.  A bucket's
width is at most 1/1024 of its lowest value, so any value is known to within
0.1 %: 3 significant decimal digits.  Storage is one flat array of NBUCKETS
64-bit counters (55,296 for values up to 2^63 - 1: 432 KiB), allocated once:
its size does not depend on the number of samples nor on how the values
spread (a dict of buckets grew with every new bucket a long trial touched,
with an int object per count above 256).  Count, min, max and sum are exact.

Percentiles are by nearest rank (the smallest recorded value with at least
p % of the samples at or below it), reported as that value's bucket's
highest value, so a reported percentile is never below the true one and at
most 0.1 % above it.
"""

import math
from array import array
from fractions import Fraction

SUB_BITS = 10
SUB = 1 << SUB_BITS                  # buckets per power of two
EXACT_BELOW = 2 * SUB                # values below are their own bucket
SIGNIFICANT_DIGITS = 3
MAX_VALUE = (1 << 63) - 1
NBUCKETS = ((MAX_VALUE.bit_length() - SUB_BITS) << SUB_BITS) + SUB   # bucket_index(MAX_VALUE) + 1
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
        self.counts = array("Q", bytes(8 * NBUCKETS))
        self.count = 0
        self.min = None
        self.max = None
        self.sum = 0
        self.out_of_range = 0      # negative or above MAX_VALUE: counted, not recorded

    def record(self, v):
        self.record_many((v,))

    def record_many(self, values):
        """Record a sequence of ints (a list or tuple: it is read more than once)."""
        if not values:
            return
        lo, hi = min(values), max(values)
        if lo < 0 or hi > MAX_VALUE:
            n = len(values)
            values = [v for v in values if 0 <= v <= MAX_VALUE]
            self.out_of_range += n - len(values)
            if not values:
                return
            lo, hi = min(values), max(values)
        c = self.counts
        if hi < EXACT_BELOW:
            for v in values:
                c[v] += 1
        else:
            for v in values:
                if v < EXACT_BELOW:
                    c[v] += 1
                else:
                    s = v.bit_length() - SUB_BITS - 1
                    c[(s << SUB_BITS) + (v >> s)] += 1
        self.count += len(values)
        self.sum += sum(values)
        if self.min is None or lo < self.min:
            self.min = lo
        if self.max is None or hi > self.max:
            self.max = hi

    def nonzero(self):
        """[(bucket index, count)] of the non-empty buckets, ascending."""
        c = self.counts
        return [(i, c[i]) for i in range(len(c)) if c[i]] if self.count else []

    def percentile(self, pct, _nonzero=None):
        if not self.count:
            return None
        rank = max(1, math.ceil(Fraction(str(pct)) * self.count / 100))   # exact, no float
        seen = 0
        for i, n in (_nonzero if _nonzero is not None else self.nonzero()):
            seen += n
            if seen >= rank:
                return min(bucket_bounds(i)[1], self.max)
        return self.max

    def buckets(self, _nonzero=None):
        """Sparse: [[lowest, highest, count], ...] of the non-empty buckets, ascending."""
        return [list(bucket_bounds(i)) + [n]
                for i, n in (_nonzero if _nonzero is not None else self.nonzero())]

    def summary(self, percentiles=(50, 90, 99, 99.9)):
        nz = self.nonzero()
        out = {"count": self.count}
        for p in percentiles:
            out["p" + ("%g" % p).replace(".", "")] = self.percentile(p, nz)
        out.update({"min": self.min, "max": self.max,
                    "mean": round(self.sum / self.count, 1) if self.count else None,
                    "out_of_range": self.out_of_range,
                    "precision": "%d significant digits (relative error <= 1/%d)"
                                 % (SIGNIFICANT_DIGITS, SUB),
                    "histogram": {"scheme": "log-linear", "exact_below": EXACT_BELOW,
                                  "buckets_per_octave": SUB,
                                  "buckets": self.buckets(nz)}})
        return out
