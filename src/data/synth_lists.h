/* synth_lists: the fixed tables of the synthetic task (private to src/data/synth*.c). */
#ifndef MXRLHF_DATA_SYNTH_LISTS_H
#define MXRLHF_DATA_SYNTH_LISTS_H

#define SYNTH_NTOPICS 24
#define SYNTH_NWORDS 32
#define SYNTH_NRUDE_ADJ 16
#define SYNTH_NRUDE 32
#define SYNTH_NOPENERS 5
#define SYNTH_NTEMPLATES 10
#define SYNTH_NCLOSERS 5
#define SYNTH_NFILLERS 22
#define SYNTH_NTOPIC_SENTENCES 12
#define SYNTH_NRUDE_SENTENCES 10

extern const char *const data_synth_topic_names[SYNTH_NTOPICS];
extern const char *const data_synth_topic_lists[SYNTH_NTOPICS][SYNTH_NWORDS];
extern const char *const data_synth_rude_list[SYNTH_NRUDE];
extern const char *const data_synth_openers[SYNTH_NOPENERS];
extern const char *const data_synth_templates[SYNTH_NTEMPLATES];
extern const char *const data_synth_closers[SYNTH_NCLOSERS];
extern const char *const data_synth_fillers[SYNTH_NFILLERS];
extern const char *const data_synth_topic_sentences[SYNTH_NTOPIC_SENTENCES];
extern const char *const data_synth_rude_sentences[SYNTH_NRUDE_SENTENCES];

#endif
