#ifndef TALLY_H
#define TALLY_H
#include <stdio.h>

/* The number of whitespace-separated words read from f. */
unsigned long tally_words(FILE *f);

#endif
