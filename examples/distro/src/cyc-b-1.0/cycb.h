#ifndef CYCB_H
#define CYCB_H
/* The name of this half of the pair, which it learns from libcyca. */
const char *cycb_name(void);
#endif
