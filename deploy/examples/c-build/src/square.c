#include "util.h"

int square(int n) { return n * n; }
