#include "util.h"

int cube(int n) { return n * square(n); }
