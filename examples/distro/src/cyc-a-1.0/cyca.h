#ifndef CYCA_H
#define CYCA_H
/* The name of this half of the pair. */
const char *cyca_name(void);
#endif
