// Tollgate's UI script: confirmations for actions, and the live log viewer.
// Plain JavaScript, no framework; the pages work without it (forms post,
// links link) except the log viewer, which links to the raw log instead.
'use strict';

(function () {
  document.addEventListener('submit', function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
  document.addEventListener('click', function (e) {
    var a = e.target.closest && e.target.closest('[data-back]');
    if (a && history.length > 1) {
      e.preventDefault();
      history.back();
    }
  });
  document.addEventListener('DOMContentLoaded', function () {
    var el = document.getElementById('logview');
    if (el) new LogViewer(el).start();
  });

  var ICONS = {QUEUED: '◷', STARTED: '▶', COMPLETED: '✓', FAILED: '✗', TIMED_OUT: '◕', CANCELLED: '⊘', INTERRUPTED: '↯', BOT_DIED: '☠', NO_RESOURCE: '∅', EXPIRED: '⧗'};
  var TERMINAL = {COMPLETED: 1, FAILED: 1, TIMED_OUT: 1, CANCELLED: 1, INTERRUPTED: 1, BOT_DIED: 1, NO_RESOURCE: 1, EXPIRED: 1};

  // Lines per block (a block is skipped by layout while off screen: CSS
  // content-visibility), lines rendered per animation frame, and how much
  // fetched text may wait for rendering before fetching pauses. Together
  // they keep a 10 MB log from freezing the page: it renders a frame at a
  // time while the page stays responsive.
  var BLOCK = 500, PER_FRAME = 2500, MAX_QUEUED = 4 << 20;

  // One escape sequence: CSI (SGR when it ends in 'm'), OSC, or a short one.
  var ESC = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()][0-9A-Za-z]|[=>78cDEHM])/g;

  function LogViewer(el) {
    this.el = el;
    this.job = el.getAttribute('data-job');
    this.offset = 0;
    this.line = 0;
    this.queue = [];   // fetched text not yet rendered
    this.pos = 0;      // how far into queue[0] rendering got
    this.queued = 0;   // characters in queue
    this.pending = ''; // the start of a line whose end has not arrived
    this.st = {fg: null, bg: null, b: false, d: false, i: false, u: false};
    this.block = null;
    this.blockLines = 0;
    this.scheduled = false;
    this.waiters = [];
    this.ended = false;
    this.follow = document.getElementById('follow');
    this.status = document.getElementById('log-status');
    var m = /^#L(\d+)$/.exec(location.hash);
    this.target = m ? parseInt(m[1], 10) : 0;
    if (this.target && this.follow) this.follow.checked = false;
  }

  LogViewer.prototype.start = function () {
    var self = this;
    this.el.textContent = '';
    this.tail = document.createElement('div');
    this.tail.className = 'l tail';
    this.el.appendChild(this.tail);
    window.addEventListener('scroll', function () {
      if (!self.follow || self.ended) return;
      var atBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 60;
      self.follow.checked = atBottom;
    }, {passive: true});
    window.addEventListener('hashchange', function () {
      var m = /^#L(\d+)$/.exec(location.hash);
      var old = self.el.querySelector('.hl');
      if (old) old.classList.remove('hl');
      if (m) {
        var l = document.getElementById('L' + m[1]);
        if (l) l.classList.add('hl');
        if (self.follow) self.follow.checked = false;
      }
    });
    this.setStatus('loading…');
    this.fetchLoop();
  };

  LogViewer.prototype.setStatus = function (s) {
    if (this.status) this.status.textContent = s;
  };

  function sleep(ms) {
    return new Promise(function (r) { setTimeout(r, ms); });
  }

  LogViewer.prototype.drained = function () {
    var self = this;
    return new Promise(function (r) { self.waiters.push(r); });
  };

  LogViewer.prototype.fetchLoop = async function () {
    var errors = 0;
    for (;;) {
      while (this.queued > MAX_QUEUED) await this.drained();
      var url = '/api/v1/jobs/' + encodeURIComponent(this.job) + '/log?offset=' + this.offset + '&wait=1';
      try {
        var r = await fetch(url, {credentials: 'same-origin', headers: {Accept: 'application/json'}});
        if (!r.ok) throw new Error('HTTP ' + r.status);
        var c = await r.json();
        errors = 0;
        this.offset = c.next_offset;
        if (c.data) this.push(c.data);
        if (c.complete) {
          this.push(null);
          return;
        }
        if (!this.ended) this.setStatus(this.line ? 'following, ' + this.line + ' lines' : 'waiting for output…');
      } catch (e) {
        errors++;
        this.setStatus('connection lost (' + e.message + '), retrying…');
        await sleep(Math.min(500 * Math.pow(2, errors), 10000));
      }
    }
  };

  // push queues text for rendering; null marks the end of the log.
  LogViewer.prototype.push = function (text) {
    if (text === null) {
      this.endQueued = true;
    } else {
      this.queue.push(text);
      this.queued += text.length;
    }
    this.schedule();
  };

  LogViewer.prototype.schedule = function () {
    if (this.scheduled) return;
    this.scheduled = true;
    var self = this;
    requestAnimationFrame(function () {
      self.scheduled = false;
      self.frame();
    });
  };

  LogViewer.prototype.frame = function () {
    var n = 0;
    while (n < PER_FRAME && this.queue.length) {
      var chunk = this.queue[0];
      var nl = chunk.indexOf('\n', this.pos);
      if (nl < 0) {
        this.pending += chunk.slice(this.pos);
        this.dropChunk();
        continue;
      }
      var text = this.pending + chunk.slice(this.pos, nl);
      this.pending = '';
      this.pos = nl + 1;
      this.addLine(text);
      n++;
      if (this.pos >= chunk.length) this.dropChunk();
    }
    if (this.queue.length) {
      this.schedule();
    } else {
      if (this.endQueued && !this.ended) this.finish();
      this.showTail();
      var w = this.waiters;
      this.waiters = [];
      w.forEach(function (r) { r(); });
    }
    if (this.queued <= MAX_QUEUED && this.waiters.length) {
      var ws = this.waiters;
      this.waiters = [];
      ws.forEach(function (r) { r(); });
    }
    if (this.target && this.line >= this.target) {
      var t = document.getElementById('L' + this.target);
      this.target = 0;
      if (t) {
        t.classList.add('hl');
        t.scrollIntoView({block: 'center'});
      }
    } else if (this.follow && this.follow.checked) {
      window.scrollTo(0, document.documentElement.scrollHeight);
    }
  };

  LogViewer.prototype.dropChunk = function () {
    this.queued -= this.queue[0].length;
    this.queue.shift();
    this.pos = 0;
  };

  LogViewer.prototype.addLine = function (text) {
    if (!this.block || this.blockLines >= BLOCK) {
      this.block = document.createElement('div');
      this.block.className = 'blk';
      this.el.insertBefore(this.block, this.tail);
      this.blockLines = 0;
    }
    this.block.appendChild(this.lineElement(++this.line, text, this.st));
    this.blockLines++;
  };

  LogViewer.prototype.lineElement = function (no, text, st) {
    var div = document.createElement('div');
    div.className = 'l';
    var a = document.createElement('a');
    a.className = 'n';
    if (no) {
      div.id = 'L' + no;
      a.href = '#L' + no;
      a.textContent = no;
    }
    var t = document.createElement('span');
    t.className = 't';
    renderANSI(overstrike(text), t, st);
    div.appendChild(a);
    div.appendChild(t);
    return div;
  };

  // showTail shows the line still being written, without a number.
  LogViewer.prototype.showTail = function () {
    this.tail.textContent = '';
    if (this.pending) {
      var st = Object.assign({}, this.st); // the tail must not move the colour state
      var el = this.lineElement(0, this.pending, st);
      while (el.firstChild) this.tail.appendChild(el.firstChild);
    }
  };

  LogViewer.prototype.finish = function () {
    this.ended = true;
    if (this.pending) {
      this.addLine(this.pending);
      this.pending = '';
    }
    var end = document.createElement('div');
    end.className = 'end';
    end.textContent = this.line ? '— end of log: ' + this.line + ' lines —' : '— the log is empty —';
    this.el.appendChild(end);
    this.setStatus(this.line + ' lines');
    this.refreshJob();
  };

  // refreshJob shows the job's final state and the actions it allows.
  LogViewer.prototype.refreshJob = async function () {
    try {
      var r = await fetch('/api/v1/jobs/' + encodeURIComponent(this.job), {credentials: 'same-origin'});
      if (!r.ok) return;
      var j = await r.json();
      var badge = document.getElementById('job-state');
      if (badge) {
        var s = document.createElement('span');
        s.className = 'st st-' + j.state.toLowerCase();
        s.textContent = (ICONS[j.state] || '') + ' ' + j.state.toLowerCase().replace('_', ' ');
        badge.textContent = '';
        badge.appendChild(s);
      }
      var times = document.getElementById('job-times');
      if (times) {
        var t = 'waited ' + dur(j.queue_seconds);
        if (j.run_seconds) t += ' · ran ' + dur(j.run_seconds);
        if (j.exit_code) t += ' · exit code ' + j.exit_code;
        if (j.reason) t += ' · ' + j.reason;
        times.textContent = t;
      }
      var wk = document.getElementById('job-worker');
      if (wk && j.worker) {
        var a = document.createElement('a');
        a.href = '/workers/' + encodeURIComponent(j.worker);
        a.textContent = j.worker;
        wk.textContent = '';
        wk.appendChild(a);
        wk.appendChild(document.createTextNode(' · attempt ' + j.attempt));
      }
      var ended = !!TERMINAL[j.state];
      var c = document.getElementById('cancel-form'), rt = document.getElementById('retry-form');
      if (c) c.hidden = ended;
      if (rt) rt.hidden = !ended;
    } catch (e) { /* the page still shows the log */ }
  };

  // dur writes seconds as the server does: "0.4 s", "12 s", "4 min 05 s".
  function dur(s) {
    if (!(s > 0)) return '0 s';
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 60) return Math.round(s) + ' s';
    var pad = function (n) { return (n < 10 ? '0' : '') + n; };
    if (s < 3600) return Math.floor(s / 60) + ' min ' + pad(Math.floor(s % 60)) + ' s';
    return Math.floor(s / 3600) + ' h ' + pad(Math.floor(s % 3600 / 60)) + ' min';
  }

  // overstrike keeps what a terminal would show of a line with carriage
  // returns (progress bars): the text after the last one.
  function overstrike(text) {
    if (text.charCodeAt(text.length - 1) === 13) text = text.slice(0, -1);
    var i = text.lastIndexOf('\r');
    return i < 0 ? text : text.slice(i + 1);
  }

  // renderANSI appends text to parent as text nodes and spans, turning SGR
  // escape sequences into classes (and colours for 256-colour and 24-bit
  // codes) and dropping every other escape sequence. Text only ever goes
  // in through textContent, so a log cannot inject markup.
  function renderANSI(text, parent, st) {
    var last = 0, m;
    ESC.lastIndex = 0;
    while ((m = ESC.exec(text)) !== null) {
      if (m.index > last) styled(parent, text.slice(last, m.index), st);
      if (m[2] === 'm') sgr(m[1], st);
      last = ESC.lastIndex;
    }
    if (last < text.length) styled(parent, text.slice(last), st);
  }

  function styled(parent, s, st) {
    if (st.fg === null && st.bg === null && !st.b && !st.d && !st.i && !st.u) {
      parent.appendChild(document.createTextNode(s));
      return;
    }
    var sp = document.createElement('span');
    var cls = [];
    if (typeof st.fg === 'number') cls.push('f' + st.fg);
    if (typeof st.bg === 'number') cls.push('g' + st.bg);
    if (st.b) cls.push('b');
    if (st.d) cls.push('d');
    if (st.i) cls.push('i');
    if (st.u) cls.push('u');
    sp.className = cls.join(' ');
    if (typeof st.fg === 'string') sp.style.color = st.fg;
    if (typeof st.bg === 'string') sp.style.backgroundColor = st.bg;
    sp.textContent = s;
    parent.appendChild(sp);
  }

  function sgr(params, st) {
    var p = params === '' ? [0] : params.split(/[;:]/).map(function (x) { return parseInt(x || '0', 10); });
    for (var i = 0; i < p.length; i++) {
      var c = p[i];
      if (c === 0) {
        st.fg = st.bg = null;
        st.b = st.d = st.i = st.u = false;
      } else if (c === 1) st.b = true;
      else if (c === 2) st.d = true;
      else if (c === 3) st.i = true;
      else if (c === 4) st.u = true;
      else if (c === 22) st.b = st.d = false;
      else if (c === 23) st.i = false;
      else if (c === 24) st.u = false;
      else if (c >= 30 && c <= 37) st.fg = c - 30;
      else if (c === 39) st.fg = null;
      else if (c >= 40 && c <= 47) st.bg = c - 40;
      else if (c === 49) st.bg = null;
      else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
      else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
      else if (c === 38 || c === 48) {
        var col = null;
        if (p[i + 1] === 5) {
          col = xterm256(p[i + 2]);
          i += 2;
        } else if (p[i + 1] === 2) {
          col = 'rgb(' + (p[i + 2] & 255) + ',' + (p[i + 3] & 255) + ',' + (p[i + 4] & 255) + ')';
          i += 4;
        }
        if (c === 38) st.fg = col;
        else st.bg = col;
      }
    }
  }

  function xterm256(n) {
    n = n | 0;
    if (n < 16) return n;
    if (n >= 232) {
      var g = 8 + (n - 232) * 10;
      return 'rgb(' + g + ',' + g + ',' + g + ')';
    }
    n -= 16;
    var v = function (x) { return x ? 55 + x * 40 : 0; };
    return 'rgb(' + v(Math.floor(n / 36)) + ',' + v(Math.floor(n / 6) % 6) + ',' + v(n % 6) + ')';
  }

  // For tests in a browser console.
  window.tollgateANSI = renderANSI;
})();
