// Definitions that keep the release binary on glibc 2.34 (Amazon Linux 2023, RHEL 9): the
// static Swift runtime references a few libm functions whose newest symbol version is
// newer than that. Defined here, they are linked in, not imported. Nothing to call.
#ifndef CGLIBCFLOOR_H
#define CGLIBCFLOOR_H
#endif
