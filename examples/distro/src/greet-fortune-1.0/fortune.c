#include <stdio.h>
#include <stdlib.h>

static const char *fortunes[] = {
    "A clean build is a cached build you have not made yet.",
    "Hash everything; trust nothing you did not hash.",
};

int main(int argc, char **argv)
{
    size_t n = sizeof fortunes / sizeof fortunes[0];
    size_t i = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 0;
    puts(fortunes[i % n]);
    return 0;
}
