// Shared view state: the header controls, watches and colours, and the live-update hooks.
import { api } from "./api.js";
import { WATCH_COLORS } from "./charts.js";

export const state = {
  bucket: "1h",
  rangeDays: 7,
  watches: [],
  onLive: null,    // the current view's handler of live events
};

export async function loadWatches() {
  state.watches = await api("/api/watches");
  return state.watches;
}

export const watchColor = (id) => {
  const i = state.watches.findIndex((w) => w.id === id);
  return WATCH_COLORS[(i < 0 ? id : i) % WATCH_COLORS.length];
};
export const watchName = (id) => (state.watches.find((w) => w.id === id) || {}).name || `watch ${id}`;

// Trends for the header's bucket and range, ending at the newest data (the API's default end).
export const trends = (watchIds) => api("/api/trends", { params: { watch_id: watchIds, bucket: state.bucket, days: state.rangeDays } });
