#include <stdio.h>
#include "util.h"

int main(void) {
    for (int i = 1; i <= 5; i++) printf("%d %d %d\n", i, square(i), cube(i));
    return 0;
}
