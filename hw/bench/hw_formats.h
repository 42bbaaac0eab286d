// hw_formats: the PEs' format numbering (the RTL's FMT_A/FMT_B parameters, the SystemC
// model's format arguments): the index in mx_hwvec_formats, 0 mxfp8_e4m3 ... 5 mxint8.
#ifndef MXRLHF_HW_FORMATS_H
#define MXRLHF_HW_FORMATS_H

extern "C" {
#include "mx/mx_hwvec.h"
}

// The index of f, -1 for a format the PEs do not take.
inline int hw_format_index(mx_format_t f)
{
    for (int i = 0; i < MX_HWVEC_NFORMATS; i++)
        if (mx_hwvec_formats[i] == f)
            return i;
    return -1;
}

#endif
