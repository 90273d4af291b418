#include <stdio.h>

#ifndef VENDOR
#define VENDOR "unknown vendor"
#endif

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "hello";
#ifdef USE_COLOR
    printf("\033[1m*** %s ***\033[0m\n", what);
#else
    printf("*** %s ***\n", what);
#endif
    printf("(built by the %s)\n", VENDOR);
    return 0;
}
