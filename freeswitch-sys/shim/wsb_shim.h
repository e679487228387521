/* Callable forms of FreeSWITCH macros and inline helpers that bindgen cannot expand. */
#ifndef WSB_SHIM_H
#define WSB_SHIM_H

#include <switch.h>

void wsb_log(int level, const char *uuid, const char *file, int line, const char *text);
switch_status_t wsb_channel_hangup(switch_channel_t *channel, switch_call_cause_t cause);
switch_status_t wsb_channel_mark_answered(switch_channel_t *channel);
void wsb_channel_set_state(switch_channel_t *channel, switch_channel_state_t state);
void wsb_channel_set_flag(switch_channel_t *channel, switch_channel_flag_t flag);
int wsb_channel_ready(switch_channel_t *channel);
const char *wsb_channel_get_variable(switch_channel_t *channel, const char *name);
const char *wsb_event_get_header(switch_event_t *event, const char *name);
switch_core_session_t *wsb_session_locate(const char *uuid);
void *wsb_session_get_private(switch_core_session_t *session);
void wsb_session_destroy(switch_core_session_t **session);
switch_status_t wsb_codec_init(switch_codec_t *codec, const char *name, uint32_t rate, int ms,
							   switch_memory_pool_t *pool);

int wsb_codec_ready(switch_codec_t *codec);

typedef void (*wsb_param_callback)(void *context, const char *name, const char *value);
/* Calls back with each <settings><param> of a configuration; -1 when it is missing. */
int wsb_config_params(const char *name, wsb_param_callback callback, void *context);
/* Calls back with each attribute of each <section><element .../> of a configuration, the element's
   place (from 0) first; an element without attributes gets one call with NULL name and value.
   -1 when the configuration is missing. */
typedef void (*wsb_element_callback)(void *context, int place, const char *name, const char *value);
int wsb_config_elements(const char *name, const char *section, const char *element, wsb_element_callback callback,
						void *context);
/* switch_check_network_list_ip (a macro): whether ip_str is in the ACL list (or CIDR list) list_name. */
int wsb_check_network_list_ip(const char *ip_str, const char *list_name);
void wsb_stream_write(switch_stream_handle_t *stream, const char *text);
/* Fires a CUSTOM event with the channel's headers plus the given ones. */
switch_status_t wsb_fire_custom_event(switch_core_session_t *session, const char *subclass, const char *const *names,
									  const char *const *values, int count, const char *body);

#endif
