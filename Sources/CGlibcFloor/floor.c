// glibc 2.35 gave hypotf a new symbol version (hypotf@GLIBC_2.35); a binary that imports it
// does not start on glibc 2.34. The Swift runtime's reference resolves to this definition
// instead. Computed in double precision, where a float's square can neither overflow nor
// underflow, it is correctly rounded for all but a vanishing set of inputs; C's rule that
// an infinite argument wins over a NaN is kept.
#include <math.h>

float hypotf(float x, float y) {
    if (isinf(x) || isinf(y)) return INFINITY;
    double dx = x;
    double dy = y;
    return (float)sqrt(dx * dx + dy * dy);
}
