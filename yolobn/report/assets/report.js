// yolobn report pages: sortable tables, heat-map tooltips; on report.html also the layer filters and per-channel details.
(function(){
'use strict';
function dataRows(tbody){return Array.from(tbody.rows).filter(r=>!r.classList.contains('detail'));}
function closeDetails(tbody){Array.from(tbody.querySelectorAll('tr.detail')).forEach(d=>d.remove());}
// every table.sortable: click (or Enter on) a header to sort by its column, again to reverse
document.querySelectorAll('table.sortable').forEach(table=>{
  const tbody=table.tBodies[0];let key=null,dir=1;
  function sortBy(th){
    const idx=Array.from(th.parentNode.children).indexOf(th),num=th.dataset.t==='num';
    dir=(key===idx)?-dir:1;key=idx;
    Array.from(th.parentNode.children).forEach(h=>h.classList.remove('asc','desc'));
    th.classList.add(dir>0?'asc':'desc');closeDetails(tbody);
    const rs=dataRows(tbody);
    rs.sort((a,b)=>{let x=a.cells[idx].dataset.v,y=b.cells[idx].dataset.v;
      if(num){x=x===''?-Infinity:parseFloat(x);y=y===''?-Infinity:parseFloat(y);return (x-y)*dir||0;}
      return x.localeCompare(y)*dir;});
    rs.forEach(r=>tbody.appendChild(r));
  }
  Array.from(table.tHead.rows[0].cells).forEach(th=>{th.addEventListener('click',()=>sortBy(th));
    th.addEventListener('keydown',e=>{if(e.key==='Enter')sortBy(th);});});
});
// heat maps with a tooltip per cell: <svg data-grid="ID"> over an <image class="grid-image">; the JSON
// script#ID holds {rows, cols, col_label, fields: [[label, rows x cols values]]}
document.querySelectorAll('svg[data-grid]').forEach(svg=>{
  const G=JSON.parse(document.getElementById(svg.dataset.grid).textContent),img=svg.querySelector('image.grid-image');
  const tip=document.getElementById('gridtip');if(!img||!tip)return;
  const num=x=>x===null?'–':(Math.abs(x)>=1e4||(Math.abs(x)<1e-3&&x!==0))?x.toExponential(2):String(x);
  svg.addEventListener('mousemove',e=>{const b=img.getBoundingClientRect();
    const c=Math.floor((e.clientX-b.left)/b.width*G.cols.length),r=Math.floor((e.clientY-b.top)/b.height*G.rows.length);
    if(c<0||r<0||c>=G.cols.length||r>=G.rows.length){tip.classList.add('hidden');return;}
    tip.textContent=G.rows[r]+' · '+G.col_label+' '+G.cols[c]+': '+G.fields.map(f=>f[0]+' '+num(f[1][r][c])).join(' · ');
    tip.dataset.row=r;tip.dataset.col=c;
    tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';tip.classList.remove('hidden');});
  svg.addEventListener('mouseleave',()=>tip.classList.add('hidden'));
});
const table=document.getElementById('layers');
if(!table)return;
const tbody=table.tBodies[0];
const q=document.getElementById('filter-name'),role=document.getElementById('filter-role'),block=document.getElementById('filter-block'),
  deadOnly=document.getElementById('filter-dead'),count=document.getElementById('shown-count');
function applyFilter(){closeDetails(tbody);const t=q.value.trim().toLowerCase();let n=0;
  dataRows(tbody).forEach(r=>{const ok=(!t||r.dataset.name.toLowerCase().includes(t))&&(!role.value||r.dataset.role===role.value)&&
    (!block.value||r.dataset.block===block.value)&&(!deadOnly.checked||r.classList.contains('has-dead'));
    r.classList.toggle('hidden',!ok);if(ok)n++;});
  count.textContent=n+' of '+dataRows(tbody).length+' layers';}
[q,role,block,deadOnly].forEach(el=>el.addEventListener('input',applyFilter));applyFilter();
// per-channel values: {columns: [...], codes: {column: [labels]}, layers: {name: [one array per column]}}
const DATA=JSON.parse(document.getElementById('channel-data').textContent);
const C={};DATA.columns.forEach((c,i)=>{C[c]=i;});
const observed='obs_flag' in C;
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function fmt(x){return x===null?'-':(Math.abs(x)>=1e4||(Math.abs(x)<1e-3&&x!==0))?x.toExponential(3):+x.toPrecision(4)+'';}
function pct(x){return x===null?'-':(100*x).toFixed(1)+'%';}
const HEAD=['ch','gamma','beta','running mean','running var','scale','out std','flag'].concat(
  observed?['pre mean','pre std','positive','post std','Δμ/σ','ln var ratio','observed']:[]);
tbody.addEventListener('click',e=>{const tr=e.target.closest('tr');if(!tr||tr.classList.contains('detail'))return;
  const nx=tr.nextElementSibling;if(nx&&nx.classList.contains('detail')){nx.remove();return;}
  const d=DATA.layers[tr.dataset.name];if(!d)return;const det=document.createElement('tr');det.className='detail';
  const td=document.createElement('td');td.colSpan=tr.cells.length;
  const eps=parseFloat(tr.dataset.eps),col=k=>d[C[k]];
  let h='<b>'+esc(tr.dataset.name)+'</b> — per-channel values (eps '+esc(tr.dataset.eps)+'; 7 significant digits in channels.csv)<table class="ch"><tr>'+
    HEAD.map(x=>'<th>'+x+'</th>').join('')+'</tr>';
  for(let i=0;i<col('gamma').length;i++){const f=col('flag')[i],g=col('gamma')[i],v=col('running_var')[i];
    const sc=(g===null||v===null)?null:g/Math.sqrt(v+eps),sd=(g===null||v===null)?null:Math.abs(g)*Math.sqrt(v/(v+eps));
    const label=DATA.codes.flag[f];
    h+='<tr class="'+(label==='constant'||label==='off'?'dead':(label==='eps-dominated'?'epsdom':''))+'"><td>'+i+'</td>';
    for(const x of [g,col('beta')[i],col('running_mean')[i],v,sc,sd])h+='<td>'+fmt(x)+'</td>';h+='<td>'+label+'</td>';
    if(observed){for(const k of ['obs_pre_mean','obs_pre_std','obs_positive_share','obs_post_std','mean_shift','log_var_ratio'])
        h+='<td>'+(k==='obs_positive_share'?pct(col(k)[i]):fmt(col(k)[i]))+'</td>';
      const o=DATA.codes.obs_flag[col('obs_flag')[i]];
      h+='<td class="'+(o==='flat'||o==='never positive'?'obsdead':'')+'">'+o+'</td>';}
    h+='</tr>';}
  td.innerHTML=h+'</table>';det.appendChild(td);tr.after(det);});
})();
